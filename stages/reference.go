package stages

// Reference is ModelOpt's export steps taken apart, each on a whole state dict
// (tensors by their fake-quant key) rather than on a layer of a planned export:
// NewModule, PreprocessLinearFusion, FusePrequantLayernorm, AdjustAttnAmax and
// PostprocessStateDict. The golden parity runner (package parity) checks each against
// ModelOpt's own outputs. A conversion needs none of them: NewPlan and NewStage run
// every step on each layer. The zero value is ready to use; no method modifies the
// state dict it is given.
type Reference struct{}
