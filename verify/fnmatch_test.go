package verify

import "testing"

// The cases follow Python's fnmatch.fnmatchcase, which ModelOpt's wildcards are meant
// for.
func TestFnmatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"lm_head", "lm_head", true},
		{"lm_head", "lm_head2", false},
		{"model.layers.0.self_attn*", "model.layers.0.self_attn.q_proj", true},
		{"model.layers.0.self_attn*", "model.layers.0.self_attn", true},
		{"model.layers.0.self_attn*", "model.layers.10.self_attn.q_proj", false},
		{"model.layers.*.mlp.gate", "model.layers.12.mlp.gate", true},
		{"model.layers.*.mlp.gate", "model.layers.12.mlp.gate_proj", false},
		{"*mlp.gate", "model.layers.1.mlp.gate", true},
		{"vision_tower*", "vision_tower.encoder.layers.0.mlp.fc1", true},
		{"*", "", true},
		{"", "", true},
		{"", "a", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"layers.[0-3].x", "layers.2.x", true},
		{"layers.[0-3].x", "layers.7.x", false},
		{"layers.[!0-3].x", "layers.7.x", true},
		{"a[b", "a[b", true}, // unclosed class: literal
		{"a[]]b", "a]b", true},
		{"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", false},
		{"*.experts.*", "model.layers.0.mlp.experts.3.w1", true},
	} {
		if got := fnmatch(tc.pattern, tc.name); got != tc.want {
			t.Errorf("fnmatch(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// TestFormatOfInvertsTheExportTable: every quant_algo the export writes maps back to
// exactly one format.
func TestFormatOfInvertsTheExportTable(t *testing.T) {
	for algo, want := range map[string]string{"NVFP4": "nvfp4", "W4A16_NVFP4": "w4a16_nvfp4", "FP8": "fp8",
		"FP8_PER_CHANNEL_PER_TOKEN": "fp8_pc_pt", "fp8_pb_wo": "fp8_pb_wo", "mxfp4": "mxfp4", "MXFP8": "mxfp8",
		"W4A16_AWQ": "int4_awq", "W4A8_AWQ": "w4a8_awq", "W8A16": "int8_wo", "W8A8_SQ_PER_CHANNEL": "int8_sq",
		"NVFP4_AWQ": "nvfp4_awq", "W4A8_NVFP4_FP8": "w4a8_nvfp4_fp8"} {
		if got, ok := formatOf(algo); !ok || got != want {
			t.Errorf("formatOf(%q) = %q, %v; want %q", algo, got, ok, want)
		}
	}
	for _, algo := range []string{"MIXED_PRECISION", "MXFP4", "nvfp4", ""} {
		if f, ok := formatOf(algo); ok {
			t.Errorf("formatOf(%q) = %q, want none", algo, f)
		}
	}
}
