package parity

import "testing"

func TestPreprocessLinearFusion(t *testing.T) { runFunction(t, "quant_utils.preprocess_linear_fusion") }
func TestFusePrequantLayernorm(t *testing.T)  { runFunction(t, "quant_utils.fuse_prequant_layernorm") }
func TestAdjustAttnAmaxValues(t *testing.T)   { runFunction(t, "quant_utils.adjust_attn_amax_values") }
func TestGetQuantConfig(t *testing.T)         { runFunction(t, "quant_utils.get_quant_config") }
