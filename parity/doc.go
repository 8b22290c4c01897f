// Package parity runs golden cases (the manifest format of ModelOpt-generated golden
// sets, schema "modelopt-export-golden/v1") against quantstream and reports one line
// per case, "PASS|FAIL id function format", ending with "N passed, M failed".
//
// The runner is driven by the manifest, never by case ids: each manifest function
// (and optionally format) maps to a Handler registered by the package that implements
// it. A case whose function has no handler fails. End-to-end cases run through the
// converter installed with SetE2ERunner and compare whole output directories.
package parity
