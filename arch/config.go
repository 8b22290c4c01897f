package arch

import (
	"encoding/json"
	"fmt"
)

// Config is the part of config.json the model rules read.
type Config struct {
	Architectures     []string `json:"architectures"`
	ModelType         string   `json:"model_type"`
	Dtype             string   `json:"dtype"`
	TorchDtype        string   `json:"torch_dtype"`
	QLoraRank         *int     `json:"q_lora_rank"`
	TieWordEmbeddings *bool    `json:"tie_word_embeddings"`
	// NumExperts / NumLocalExperts / NRoutedExperts bound the expert count of fused
	// experts tensors (Qwen-MoE / Mixtral, GPT-OSS / DeepSeek, GLM-4.5, NemotronH
	// names); nil when absent.
	NumExperts      *int64  `json:"num_experts"`
	NumLocalExperts *int64  `json:"num_local_experts"`
	NRoutedExperts  *int64  `json:"n_routed_experts"`
	TextConfig      *Config `json:"text_config"`
}

// ParseConfig decodes config.json.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", ErrConfig, err)
	}
	return &c, nil
}

// Type is model_type, or the text model's for a multimodal config that has none.
func (c *Config) Type() string {
	if c.ModelType == "" && c.TextConfig != nil {
		return c.TextConfig.ModelType
	}
	return c.ModelType
}

// Experts is config.json's num_experts, num_local_experts or n_routed_experts (also
// under text_config), 0 when absent. DeepSeek's n_routed_experts counts the routed
// experts only, the ones a fused experts tensor holds (shared experts are modules
// of their own).
func (c *Config) Experts() int64 {
	for ; c != nil; c = c.TextConfig {
		for _, n := range []*int64{c.NumExperts, c.NumLocalExperts, c.NRoutedExperts} {
			if n != nil && *n > 0 {
				return *n
			}
		}
	}
	return 0
}

// Tied reports tie_word_embeddings (the text config's when the top level has none).
func (c *Config) Tied() bool {
	for ; c != nil; c = c.TextConfig {
		if c.TieWordEmbeddings != nil {
			return *c.TieWordEmbeddings
		}
	}
	return false
}
