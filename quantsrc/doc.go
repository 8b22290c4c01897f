// Package quantsrc reads source checkpoints that are already quantized, the way
// ModelOpt's hf_ptq flow loads them before quantizing again, so that everything
// after the source (planning, calibration, export, the writer) sees plain BF16
// weights:
//
//   - Block-FP8 sources (DeepSeek-V3/R1/V3.1, Kimi-K2, Qwen3-*-FP8): config.json
//     quantization_config {"quant_method": "fp8", "weight_block_size": [bi, bj]},
//     each F8_E4M3 <m>.weight with an F32 <m>.weight_scale_inv per block; a weight
//     reads as W = bf16(f32(q) · s[i/bi][j/bj]) (quant.FP8Block), edge blocks
//     partial.
//   - gpt-oss MXFP4 experts: {"quant_method": "mxfp4"}, <c>.<p>_blocks U8
//     [E, R, G, 16] with <c>.<p>_scales U8 [E, R, G]; they read as the BF16 hub
//     tensor <c>.<p> [E, 32·G, R] (quant.MXFP4DequantTransposed).
//
// Anything else that is quantized (another quant_method, or tensors that can only
// be quantized data) is refused with ErrUnsupported, from config.json and the
// tensor headers alone, before any data is read; a supported source whose tensors
// contradict its config is refused with ErrInvalid, every problem at once.
//
// Detect decides; Scheme.View gives an arrowio view of the checkpoint in which the
// quantized tensors are replaced by derived BF16 tensors (arrowio.Checkpoint.Derive):
// decoding happens when a layer is read, in pieces (a band of block rows, one
// expert), on all cores, into the layer's own buffer, so a conversion's memory
// budget counts exactly the BF16 bytes. The view also serves --dequantize: written
// as it is, it is the BF16 checkpoint DeepSeek's fp8_cast_bf16.py or transformers'
// Mxfp4Config(dequantize=True) writes.
//
// Two more source-side rules of hf_ptq live here. MTP layers (MTP): DeepSeek's and
// GLM's next-token-prediction layers model.layers.<num_hidden_layers>.* are not
// modules of the model transformers builds; hf_ptq copies them into the export
// unchanged and appends "<prefix>*" to exclude_modules. Fused experts (JoinFused):
// calibration state saved from transformers 5 names expert quantizers after the
// fused in-memory tensors (experts.gate_up_proj_weight_quantizers.<e>) while a hub
// checkpoint stores experts one by one; the join gives each per-expert weight its
// quantizers and buffers.
//
// Everything is safe for concurrent use once built; a Scheme is read-only.
package quantsrc
