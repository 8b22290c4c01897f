// Package quantstream converts large-language-model checkpoints into quantized,
// deployable checkpoints layer by layer, as a stream, reproducing NVIDIA ModelOpt's
// unified Hugging Face export bit for bit.
//
// This package is the vocabulary every other one speaks. A conversion is a Source of
// layers, a chain of Stages and a Sink:
//
//	Source ──Layer──▶ Stage ──▶ Stage ──▶ … ──▶ Sink
//	(arrowio.Checkpoint.Source)  (stages.Stage, …)   (arrowio.Writer)
//
// Everything is planned from headers before any data is read: a Source lists its
// layers as LayerInfo (index, name prefix and each tensor's TensorInfo: name,
// dtype, shape), each Stage maps a layer's headers to its output headers (Plan),
// and the writer lays its shards out from the result. Package pipeline runs the
// chain and checks every layer against the plan; package convert prepares and runs
// a whole conversion (convert.Prepare).
//
// A Layer is one decoder block (or a group of the tensors outside the decoder
// blocks) held as one Arrow record batch; see Layer for the ownership rules. Every
// layer of a conversion is built with a LayerBuilder: one data buffer allocated at
// its final size and filled in place, optionally with append room after the last
// tensor so that a later stage can add small tensors without a copy (Layer.Extend).
//
// Subpackages: quant (numeric formats), arrowio (files), pipeline (the engine),
// stages (ModelOpt's export steps), modelopt (ModelOpt state and recipes), convert
// (the whole job), parity (the golden-case runner).
package quantstream
