// Package modelopt supplies the quantizer attributes that NVIDIA ModelOpt keeps outside
// the safetensors: which quantizers exist, whether they are enabled, their num_bits,
// axis, block sizes and class. The tensors themselves (weights, _amax, _pre_quant_scale,
// ...) are read by the normal safetensors path; this package only says what they mean.
//
// There are three sources of attributes, all ending in a Table (quantizer name →
// *quant.Quantizer):
//
//	quantizers.json (golden sets)   LoadQuantizersJSON
//	modelopt_state.pth (saved dir)  ReadSavedDir / ReadState → State.Quantizers
//	a recipe + a plain checkpoint   Preset / ResolveRecipe / ReadRecipeYAML
//	                                → NewModel + Apply (or DataFree) → Quantized.Table
//
// # Saved checkpoints: modelopt_state.pth
//
// With mto.enable_huggingface_checkpointing(), save_pretrained writes modelopt_state.pth
// next to the weights: a torch.save ZIP (stored entries, 64-byte aligned data) holding
// <folder>/data.pkl, a pickle of protocol 2, and <folder>/data/<key> for the raw
// little-endian bytes of any tensor in it. The pickle is
//
//	{"modelopt_state_dict": [(mode, {"config": ..., "metadata": {"quantizer_state": ...}}), ...],
//	 "modelopt_version": "..."}
//
// and the last mode with a quantizer_state (the calibration mode: max_calibrate,
// awq_lite_calibrate, ...) describes the quantizers as they were saved. DecodeArchive
// returns the whole pickle as a tree of Go values (see value.go); EncodeJSON writes that
// tree in the tagged JSON of the golden saved_decoded/modelopt_state.json; ParseState
// lifts the modes, the Table and per-quantizer extras (saved buffers, _amax_for_smoothing).
//
// # The unpickler's safety model
//
// Unpickle is written for this one format and trusts nothing in the file:
//
//   - It executes nothing. Only the opcodes torch.save emits for plain data are
//     accepted (PROTO ≤ 2, MARK, STOP, the container, int, float, string, bool and None
//     opcodes, memo PUT/GET, GLOBAL, REDUCE, BINPERSID, and LONG1 up to 64 bits); any
//     other opcode is ErrUnsupported.
//   - GLOBAL resolves only an allow list: torch.Size, the torch dtypes, the torch
//     <X>Storage classes, torch._utils._rebuild_tensor_v2 and collections.OrderedDict.
//     Anything else (os.system, torch.load, ...) is refused with ErrUnsupported naming
//     it. REDUCE may call only Size, OrderedDict() and _rebuild_tensor_v2, and each is
//     rebuilt by Go code that checks its arguments; dtypes and storage classes are
//     plain values.
//   - Every length is checked against the bytes left before anything is allocated;
//     data.pkl, each storage entry and all storages together are bounded by Limits, and a
//     storage entry must be exactly numel × element size bytes. Zip CRCs are verified.
//   - The number of objects, memo entries and MARK nesting are bounded while decoding;
//     afterwards the result is walked once with a depth bound (which also rejects cycles
//     built through the memo) and a visit budget (which rejects a small shared DAG that
//     unfolds into a huge tree), so every later walk is bounded too.
//   - Tensor views are checked against their storage (offset, shape, strides) before
//     their bytes are gathered.
//
// Damage is ErrCorrupt, refused content ErrUnsupported, exceeded bounds ErrLimit; data
// never causes a panic (FuzzUnpickle, FuzzState).
//
// # Recipes
//
// A Recipe is ModelOpt's QuantizeConfig: an ordered list of rules {quantizer_name
// (fnmatch wildcard), parent_class, cfg (a dict, or a list for a SequentialQuantizer),
// enable} and a calibration algorithm. The mtq presets (FP8_DEFAULT_CFG, NVFP4_DEFAULT_CFG,
// W4A8_AWQ_BETA_CFG, MXFP8_DEFAULT_CFG, FP8_KV_CFG, ...) are restated in Go in presets.go
// and checked against the resolved recipes of the golden cases; Combine appends a
// KV-cache preset as mtq's update_quant_cfg_with_kv_cache_quant does. Recipe files are
// read from JSON (the quant_recipe.json form) or from YAML in the modelopt_recipes form,
// whose imports of ModelOpt's built-in configs resolve to the same Go data.
//
// NewModel derives from config.json and the tensor shapes the quantizers mtq.quantize
// inserts (see Model), and Apply runs the rules over them the way set_quantizer_by_cfg
// does (later rules override, a cfg replaces every attribute, enable alone toggles,
// per-expert names also match their singular wildcard), then applies what weight
// calibration changes in the attributes (block axes, StaticBlockScaleQuantizer).
//
// # Data-free conversion
//
// For a recipe calibrated with max (or not at all) whose enabled activation quantizers
// are all dynamic or MX, ModelOpt's quantizer state depends on the weights alone
// (mtq.quantize with forward_loop=None gives byte-identical exports; see the golden
// data_free_check). DataFree checks that and Quantized.WeightAmax computes each weight
// quantizer's _amax with quant.CalibrateAmax. Other recipes are refused with
// ErrNeedsCalibration, which says to calibrate with ModelOpt and pass the saved folder.
//
// All functions are safe for concurrent use on distinct values; a Table, State or
// Quantized is read-only once returned.
package modelopt
