// Package quantstream converts large-language-model checkpoints into quantized,
// deployable checkpoints layer by layer, as a stream, reproducing NVIDIA ModelOpt's
// unified Hugging Face export bit for bit.
//
// A conversion is a source of layers, a chain of Stages and a sink:
//
//	arrowio (safetensors shards) → Layer → Stage → Stage → … → arrowio (sharded writer)
//
// A Layer is one decoder block (or the group of every tensor outside the decoder
// blocks) held as one Arrow record batch; see Layer for the ownership rules.
// Subpackages: quant (numeric formats), arrowio (files), pipeline (the engine),
// stages (ModelOpt's export steps), modelopt (ModelOpt state and recipes), parity
// (the golden-case runner).
package quantstream
