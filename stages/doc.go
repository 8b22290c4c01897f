// Package stages reproduces ModelOpt's unified Hugging Face export
// (export_hf_checkpoint) as streaming steps over layers, bit-exactly.
//
// An export is planned first, from tensor headers, config.json and the quantizer
// attributes alone (NewPlan): every output tensor's name, dtype and shape per layer,
// hf_quant_config.json and the config.json "quantization_config", and every problem of
// the inputs at once. Before any layer is planned, the input is checked against the
// quantizer table (validate.go): an enabled weight quantizer needs its weight, every
// quantizer buffer a module, and every buffer the calibration state records must be
// there with its shape; counts and shapes that size anything (fused experts) are
// checked against config.json and the table. Then a Stage turns each layer record
// into its exported record, refusing non-finite or negative calibration buffers
// (quant.ErrNonFinite, quant.ErrNonPositive) before any step reads them:
//
//	layer in ─► expand fused experts (_export_fused_experts)
//	         ─► fill expert input amax (set_expert_quantizer_amax)
//	         ─► nvfp4_awq: fold o_proj/down_proj pre_quant_scale into v_proj/up_proj
//	         ─► AWQ experts: resmooth per projection
//	         ─► fusion groups (q/k/v, gate/up, w1/w3, shared experts): average and
//	            rescale pre_quant_scale, share input and per-tensor weight amax,
//	            fold the scale into the feeding norm
//	         ─► sync expert gate/up amax ─► quantize + scales (quant.PrepareRowExport:
//	            scales by quant's rules, weight rows on all cores into the output)
//	         ─► postprocess_state_dict (drop buffers, KV scales, squeeze) ─► layer out
//
// One file per step: moe.go, fusion.go, export.go, postprocess.go, config.go. The
// per-family rules that stand in for ModelOpt's dummy forward are package arch's
// (families as data); layout.go refuses experts in a layout the family does not list.
// Everything but the config is local to a layer: the only cross-layer inputs are the
// model-level format and the KV cache format, both fixed by the plan. Within a layer,
// everything is local to a module, or to one expert's gate and up projections, except
// the MoE input-amax fill and AWQ resmoothing over all experts of a projection (and
// fused experts, one tensor): so a layer too large for memory may be planned and
// processed in groups of whole routed experts (split.go, Plan.ExpertSplit), the fill
// target being computed beforehand from the whole layer's amaxes.
//
// Ownership and concurrency: Stage.Process takes ownership of its input layer and
// releases it (also on error); the returned layer is the caller's and is allocated
// from the Stage's allocator. Input tensor data is never written. A Stage and a Plan
// are read-only after NewPlan, so Process may run concurrently on different layers,
// and its output does not depend on the order of calls.
//
// Numerics follow PyTorch on CPU by default (Options.Div = quant.DivIEEE), which is
// what the golden files were produced with; quant.DivCUDA reproduces a GPU export.
package stages
