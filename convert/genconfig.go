package convert

import (
	"encoding/json"
	"fmt"

	"github.com/quantstream/quantstream/internal/pyjson"
	"github.com/quantstream/quantstream/stages"
)

// generationConfigFromModel writes the generation_config.json that transformers
// derives from a model config when the checkpoint has none
// (GenerationConfig.from_model_config, saved by save_pretrained and so by ModelOpt's
// export): the special token ids the config sets, the output flags off, use_cache,
// the transformers version, and the _from_model_config marker; sorted keys, indent 2,
// a trailing newline.
func generationConfigFromModel(configJSON []byte) ([]byte, error) {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(configJSON, &cfg); err != nil {
		return nil, fmt.Errorf("convert: config.json: %w", err)
	}
	out := map[string]json.RawMessage{
		"_from_model_config":   json.RawMessage("true"),
		"output_attentions":    json.RawMessage("false"),
		"output_hidden_states": json.RawMessage("false"),
		"use_cache":            json.RawMessage("true"),
	}
	for _, k := range []string{"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "use_cache", "transformers_version"} {
		if v, ok := cfg[k]; ok && string(v) != "null" {
			out[k] = v
		}
	}
	vals := make(map[string]any, len(out))
	for k, raw := range out {
		v, err := stages.ParseOrdered(raw)
		if err != nil {
			return nil, fmt.Errorf("convert: config.json: %s: %w", k, err)
		}
		vals[k] = v
	}
	b, err := pyjson.Indent(pyjson.Sorted(vals), "  ")
	if err != nil {
		return nil, fmt.Errorf("convert: config.json: %w", err)
	}
	return append(b, '\n'), nil
}
