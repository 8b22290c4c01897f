// Package parity runs golden cases (the manifest format of ModelOpt-generated golden
// sets, schema "modelopt-export-golden/v1") against quantstream and reports one line
// per case, "PASS|FAIL id function format", ending with "N passed, M failed"
// (Load, Run, Summary; `quantstream parity DIR…` is the command).
//
// A manifest has two kinds of cases, and the runner is driven by the manifest, never
// by case ids:
//
//   - Tensor cases (groups "unit" and "modules") name a ModelOpt function. A fixed
//     table in this package (registry.go) maps each function name to a handler that
//     computes it from the case's input tensors and parameters, mostly through
//     quant.Reference (ModelOpt's steps one by one) and package stages; the results
//     are compared with the expected tensors bit for bit (CompareExact) and the
//     expected values (ValuesEqual). A function missing from the table fails its
//     cases (ErrNoHandler), and so does a case whose reference raised but whose
//     handler did not fail.
//   - End-to-end cases convert a whole checkpoint through the real converter
//     (ConvertE2E, package convert) in each way the case can be fed (Variant: the
//     fake-quant state dict, a save_pretrained folder with the ModelOpt state, a
//     plain checkpoint and a recipe, the command line) and compare
//     the output directory with the expected one (CompareCheckpointDirs: tensors
//     exactly, JSON files by value with the manifest's ignore/only paths). Cases
//     that expect an error must be refused.
//
// Nothing is skipped: a case the runner cannot run is a failure.
package parity
