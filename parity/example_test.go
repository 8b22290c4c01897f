package parity_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/quantstream/quantstream/parity"
)

// Run a few golden cases, chosen by group and by a substring of their id.
func ExampleRun() {
	m, err := parity.Load(filepath.Join("..", "testdata", "golden"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	fmt.Println(m.Schema, len(m.Cases), "tensor cases,", len(m.E2E), "end-to-end")
	out := parity.Run(context.Background(), m, parity.Options{Group: "unit", Match: "unit/0019"}, os.Stdout)
	fmt.Println(parity.Summary(out))
	// Output:
	// modelopt-export-golden/v1 973 tensor cases, 23 end-to-end
	// PASS unit/00190/quant_utils.pack_int4_in_uint8/int4_awq quant_utils.pack_int4_in_uint8 int4_awq
	// PASS unit/00191/quant_utils.pack_int4_in_uint8/int4_awq quant_utils.pack_int4_in_uint8 int4_awq
	// PASS unit/00192/quant_utils.pack_int4_in_uint8/int4_awq quant_utils.pack_int4_in_uint8 int4_awq
	// PASS unit/00193/quant_utils.to_quantized_weight/fp8 quant_utils.to_quantized_weight fp8
	// PASS unit/00194/quant_utils.to_quantized_weight/fp8 quant_utils.to_quantized_weight fp8
	// PASS unit/00195/quant_utils.from_quantized_weight/fp8 quant_utils.from_quantized_weight fp8
	// PASS unit/00196/quant_utils.to_quantized_weight/fp8 quant_utils.to_quantized_weight fp8
	// PASS unit/00197/quant_utils.to_quantized_weight/fp8 quant_utils.to_quantized_weight fp8
	// PASS unit/00198/quant_utils.to_quantized_weight/fp8 quant_utils.to_quantized_weight fp8
	// PASS unit/00199/quant_utils.to_quantized_weight/fp8 quant_utils.to_quantized_weight fp8
	// 10 passed, 0 failed
}

// A case whose function no handler knows is a failure, never a skip: a manifest
// regenerated with a newer ModelOpt cannot pass by adding functions.
func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "example-manifest-")
	defer os.RemoveAll(dir)
	manifest := `{"schema": "` + parity.Schema + `", "set": "example", "cases": [
	  {"id": "unit/0/made_up.function/nvfp4", "group": "unit", "function": "made_up.function", "format": "nvfp4"}]}`
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(manifest), 0o644); err != nil {
		fmt.Println(err)
		return
	}

	m, err := parity.Load(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	out := parity.Run(context.Background(), m, parity.Options{}, os.Stdout)
	fmt.Println(parity.Summary(out))
	fmt.Println(errors.Is(out[0].Err, parity.ErrNoHandler))
	// Output:
	// FAIL unit/0/made_up.function/nvfp4 made_up.function nvfp4: parity: no handler for function "made_up.function" format "nvfp4"
	// 0 passed, 1 failed
	// true
}
