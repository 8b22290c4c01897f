package arch

import (
	"regexp"
	"strconv"
)

// layerRE finds the first "layers.N." component of a tensor name. Nine digits bound
// the index so that it always fits an int.
var layerRE = regexp.MustCompile(`(?:^|\.)layers\.(\d{1,9})\.`)

// LayerOf returns the decoder layer index and prefix of a tensor name
// ("model.layers.3.mlp.up_proj.weight" -> 3, "model.layers.3."), or -1 and "" for a
// tensor outside every decoder layer ("model.embed_tokens.weight",
// "model.mtp_layers.0.x.weight"). The base of the prefix ("model.") is the prefix
// without its "layers.N." (LayerBase).
func LayerOf(name string) (int, string) {
	m := layerRE.FindStringSubmatchIndex(name)
	if m == nil {
		return -1, ""
	}
	n, err := strconv.Atoi(name[m[2]:m[3]])
	if err != nil {
		return -1, ""
	}
	return n, name[:m[1]]
}

// LayerBase is the part of a layer prefix before "layers.N." ("model." for
// "model.layers.3.", "" for "layers.3.").
func LayerBase(index int, prefix string) string {
	s := "layers." + strconv.Itoa(index) + "."
	if len(prefix) >= len(s) && prefix[len(prefix)-len(s):] == s {
		return prefix[:len(prefix)-len(s)]
	}
	return prefix
}
