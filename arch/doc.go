// Package arch owns the model knowledge of quantstream: what a Hugging Face model
// family looks like to ModelOpt's export, written as data.
//
// ModelOpt learns a model's structure by running it (a dummy forward finds the linear
// layers that read one input tensor; module classes say which experts and routers
// exist). quantstream never runs the model, so every family it converts is described
// by a Family: its fusion groups (modules that read one input, and the norm whose
// output that input is), the nvfp4_awq pre_quant_scale folds, how the norm scales
// (w or 1 + w), the layouts its experts may come in (one module per expert, a
// transformers-5 fused 3-D tensor, a batched-matmul 3-D tensor), its MoE routers and
// the renames between the names on disk and in memory. The built-in families are JSON
// files embedded from families/; a user adds one without recompiling by handing a file
// of the same format to convert --arch (Load). docs/arch-rules.md documents the format.
//
//	config.json ─► ParseConfig ─► Registry.Detect ─► *Family ─► stages (plan, fuse, fold)
//	                                   ▲
//	        families/*.json (built in) + --arch FILE (user)
//
// The package also owns the other naming rules every layer of the converter must agree
// on: which tensors form decoder layer N (LayerOf) and how config.json is read
// (ParseConfig).
//
// Everything here is read-only after loading: a Family and a Registry may be shared by
// any number of goroutines.
package arch
