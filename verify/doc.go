// Package verify checks that a ModelOpt-format quantized checkpoint (safetensors
// shards, hf_quant_config.json, config.json) will load and is not garbage — one
// written by quantstream, by ModelOpt or by hand — and describes what a checkpoint
// holds (Inspect). The quantstream CLI runs it as `quantstream verify DIR` and
// `quantstream inspect DIR`.
//
// # What Verify checks
//
// Headers and configs first, then data; every problem is a Finding naming the tensor
// and file, and an error makes the checkpoint unsound (Report.OK false, exit status 1):
//
//	files     the index against the shard headers: every mapped tensor in the shard
//	          the index names, no tensor stored twice, no stray tensor or shard,
//	          metadata.total_size the sum of the tensors' bytes; every *.json parses
//	config    hf_quant_config.json's quantization and config.json's
//	          quantization_config agree (quant_algo, KV algorithm, excluded modules,
//	          group size, quantized_layers), the quant_algo is one ModelOpt writes
//	layout    per quantized module, from quant_algo or quantized_layers
//	          (MIXED_PRECISION), the tensors its format needs with the dtype and shape
//	          it implies: packing (two E2M1 per byte along the input, INT4 along the
//	          output), block counts, 0-dim per-tensor scales, per-expert linears and
//	          batched-matmul [E, …] experts; nothing the format does not write
//	          (calibration buffers left behind included)
//	coverage  every unquantized linear-like weight (2-D float weights that are not
//	          embeddings, and BF16 [E, …] experts) covered by exclude_modules, matched
//	          as ModelOpt means it (the name, or an fnmatch wildcard); no quantized
//	          module excluded; under MIXED_PRECISION, quantized iff listed
//	kv-cache  k_proj.k_scale / v_proj.v_scale on every attention iff a KV algorithm
//	          is set
//	fusion    the modules a family fuses (q/k/v, gate/up, w1/w3, shared experts —
//	          stages' rules, the ones convert applies: Arch.FusedGroups) have one
//	          format, and where the export shares scales (stages.SharesFusedScales)
//	          equal input_scale and weight_scale_2; one expert's gate and up have equal
//	          per-tensor weight scales; every quantized module is one of the family's
//	          linears (arch.Family.Linears) and none is named as a fusion member under
//	          a parent no rule covers (the export's refusals: self_attn renamed
//	          attention would otherwise pass as a module of no group)
//	scales    (data) per-tensor scales finite and positive where engines multiply or
//	          divide; no NaN among NVFP4 E4M3 block scales, E8M0 block scales or FP8
//	          weight codes (the E4M3 cast overflows to NaN); no NVFP4 block saturated
//	          at the 448 clamp with every element ±6
//
// ModelOpt's documented quirks are warnings that say so: an all-zero NVFP4 weight is
// exported with weight_scale_2 = 0, every block scale NaN and every element code 7
// (golden README, "NVFP4 with an all-zero weight"). A check that cannot run is a
// note: the fused-group check needs the family's rules, and says so when stages has
// none for the model type.
//
// # --against: SNR against the source
//
// Options.Against dequantizes every quantized weight with quant's dequantizers
// (quant.FromQuantizedWeight, row chunks sliced with their scales; batched-matmul
// experts expert by expert, NVFP4 ones through the transpose ModelOpt quantized) and
// compares it with the source weight of the same name (or an expert's rows of a
// transformers-5 fused experts tensor): SNR = 10·log10(Σ s² / Σ (s − d)²) per module,
// per expert for [E, …] experts. AWQ formats smooth the weight by input-channel scales
// (and nvfp4_awq folds some into output rows), so theirs is taken after the best
// per-column, then per-row rescaling, which a shuffled or transposed weight cannot
// fake. A module below its format's floor is an error. The floors are about half the
// lowest SNR measured per precision class on every golden export against its source
// (TestGoldenAgainstSource prints them) and on quantstream's outputs of the tiny and
// bench-shaped models:
//
//	format                          lowest measured   floor
//	fp8, fp8_pc_pt, fp8_pb_wo, mxfp8  31.0 dB           15 dB
//	int8_wo, int8_sq                  42.6 dB           20 dB
//	nvfp4 family, w4a16_nvfp4         18.9 dB            8 dB
//	int4_awq, w4a8_awq (rescaled)     17.8 dB            8 dB
//	nvfp4_awq (rescaled)              19.7 dB            8 dB
//	mxfp4                             18.3 dB            8 dB
//
// A transposed, shuffled or misplaced weight is uncorrelated with its source: about
// −3 dB (0 dB rescaled).
//
// # Engines
//
// Options.Engines judges the checkpoint by each engine's ModelOpt loader (vLLM,
// SGLang, TensorRT-LLM): accepted quant_algo values and how the loader spells them,
// the per-layer algorithms of MIXED_PRECISION, shape rules (vLLM's FP8_PB_WO needs
// both dims divisible by 128 and a 4-D block scale; NVFP4 a multiple of 16 inputs),
// required config fields, where the KV-cache config is read from. The rules are one
// table (engines.go), each naming the loader file and commit it was read from; what
// was not read is "unknown", never guessed. A refusal is an error. JudgeHeaders runs
// the same rules on headers alone, which is how convert and plan refuse an --engine
// the output would not load before reading any data.
//
// # Memory, concurrency, ownership
//
// Verify reads headers and configs whole (bounded: a safetensors header by arrowio's
// limit, a JSON file by 256 MiB), then tensor data a chunk at a time with pread:
// the data checks hold two reads of at most 4 MiB, --against 2^18 elements of source
// and dequantized values plus the dequantizer's temporaries, whatever the size of the
// checkpoint or of a module (TestBoundedMemory: heap growth under 32 MiB on 8 Mi-element
// modules). It runs on the calling goroutine, calls Options.Progress from it, stops at
// ctx's end, and closes every file before it returns. Reports own their slices.
package verify
