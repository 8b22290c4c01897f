package parity

import (
	"fmt"
	"slices"
	"sort"

	"github.com/quantstream/quantstream/quant"
)

// postprocessStateDict runs stages.Reference.PostprocessStateDict on the case's state dict
// (inputs by key; params.input_keys lists them, params.aliases the tied keys whose
// tensor is stored once) and checks the returned key set against params.output_keys.
func postprocessStateDict(c *Case) (*Result, error) {
	var keys, want []string
	var maxbound float32
	var kv *string
	var qlora bool
	aliases := map[string]string{}
	for name, v := range map[string]any{"input_keys": &keys, "output_keys": &want, "maxbound": &maxbound,
		"quantization": &kv, "is_modelopt_qlora": &qlora, "aliases": &aliases} {
		if _, err := c.Param(name, v); err != nil {
			return nil, err
		}
	}
	sd := map[string]quant.Tensor{}
	for _, k := range keys {
		src := k
		if a, ok := aliases[k]; ok {
			src = a
		}
		t, err := c.MustInput(src)
		if err != nil {
			return nil, err
		}
		sd[k] = t
	}
	kvf := ""
	if kv != nil {
		kvf = *kv
	}
	out, err := stagesRef.PostprocessStateDict(sd, maxbound, kvf, qlora, aliases, quant.DivIEEE)
	if err != nil {
		return nil, err
	}
	got := make([]string, 0, len(out))
	res := &Result{Tensors: map[string]*quant.Tensor{}}
	for k, t := range out {
		got = append(got, k)
		res.Tensors[k] = &t
	}
	sort.Strings(got)
	w := slices.Clone(want)
	sort.Strings(w)
	if _, _, raises := c.Raises(); !raises && !slices.Equal(got, w) {
		return nil, fmt.Errorf("key set %v, want %v", got, w)
	}
	return res, nil
}
