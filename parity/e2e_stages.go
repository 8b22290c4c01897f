package parity

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

func init() {
	SetE2ERunner(runStagesE2E)
	RegisterE2EInputs(VariantState, stateInputs)
}

// E2EInputs is what the stages need to convert an end-to-end case: the pre-export
// state dict (weights and quantizer buffers), config.json, the quantizer attributes,
// and folders to take generation_config.json from.
type E2EInputs struct {
	Tensors    map[string]quant.Tensor
	ConfigJSON []byte
	Quantizers stages.Quantizers
	SideDirs   []string
}

var e2eInputs = map[Variant]func(ctx context.Context, e *E2ECase) (*E2EInputs, error){}

// RegisterE2EInputs installs the loader of one variant's inputs (the quantizer table
// and amax may come from quantizers.json, a modelopt_state.pth or a data-free recipe).
func RegisterE2EInputs(v Variant, load func(ctx context.Context, e *E2ECase) (*E2EInputs, error)) {
	e2eInputs[v] = load
}

func runStagesE2E(ctx context.Context, e *E2ECase, v Variant, outDir string) error {
	load, ok := e2eInputs[v]
	if !ok {
		return fmt.Errorf("%w for variant %q", ErrNoHandler, v)
	}
	in, err := load(ctx, e)
	if err != nil {
		return err
	}
	return ConvertInMemory(ctx, in.Tensors, in.ConfigJSON, in.Quantizers, in.SideDirs, outDir, 1)
}

// stateInputs loads a VariantState case: the union of the input shards (a later shard
// wins), the quantizer attributes of quantizers.json and the input folder's config.json.
func stateInputs(ctx context.Context, e *E2ECase) (*E2EInputs, error) {
	tensors, err := LoadShards(e)
	if err != nil {
		return nil, err
	}
	in := e.Path(e.InputDir)
	qs, err := modelopt.LoadQuantizersJSON(filepath.Join(in, "quantizers.json"))
	if err != nil {
		return nil, err
	}
	cfg, err := os.ReadFile(filepath.Join(in, "config.json"))
	if err != nil {
		return nil, err
	}
	var side []string
	if len(e.InputShards) > 0 {
		side = append(side, filepath.Dir(e.Path(e.InputShards[0])))
	}
	return &E2EInputs{Tensors: tensors, ConfigJSON: cfg, Quantizers: qs, SideDirs: append(side, in)}, nil
}

// LoadShards reads the union of a case's input shards; a key in a later shard
// replaces the same key of an earlier one.
func LoadShards(e *E2ECase) (map[string]quant.Tensor, error) {
	tensors := map[string]quant.Tensor{}
	for _, shard := range e.InputShards {
		f, err := arrowio.Open(e.Path(shard))
		if err != nil {
			return nil, err
		}
		for _, h := range f.Header.Tensors {
			t, err := f.ReadTensor(h.Name)
			if err != nil {
				f.Close()
				return nil, err
			}
			tensors[h.Name] = t
		}
		f.Close()
	}
	return tensors, nil
}

// ConvertInMemory exports a small in-memory state dict with the stages package into
// outDir: model.safetensors, hf_quant_config.json, config.json (with
// quantization_config) and generation_config.json copied from the first of sideDirs
// that has one. workers > 1 runs that many Process calls concurrently. It is the
// stand-in driver until the streaming convert path is wired.
func ConvertInMemory(ctx context.Context, tensors map[string]quant.Tensor, configJSON []byte, qs stages.Quantizers, sideDirs []string, outDir string, workers int) error {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	infos := make([]quantstream.TensorInfo, len(names))
	for i, n := range names {
		t := tensors[n]
		infos[i] = quantstream.TensorInfo{Name: n, DType: t.DType.String(), Shape: t.Shape}
	}
	plan, err := stages.NewPlan(infos, configJSON, qs, stages.Options{})
	if err != nil {
		return err
	}
	st := stages.NewStage(plan, memory.NewGoAllocator())
	out, err := runLayers(ctx, plan, st, tensors, workers)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	if err := writeSafetensors(filepath.Join(outDir, "model.safetensors"), out); err != nil {
		return err
	}
	if hq, err := plan.HFQuantConfigJSON(); err != nil {
		return err
	} else if hq != nil {
		if err := os.WriteFile(filepath.Join(outDir, "hf_quant_config.json"), hq, 0o644); err != nil {
			return err
		}
	}
	c, err := plan.ConfigJSON(configJSON)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "config.json"), c, 0o644); err != nil {
		return err
	}
	for _, d := range sideDirs {
		b, err := os.ReadFile(filepath.Join(d, "generation_config.json"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(outDir, "generation_config.json"), b, 0o644)
	}
	return nil
}

// runLayers feeds every planned layer through the stage, with up to workers
// concurrent Process calls, and gathers the output tensors.
func runLayers(ctx context.Context, plan *stages.Plan, st *stages.Stage, tensors map[string]quant.Tensor, workers int) (map[string]quant.Tensor, error) {
	workers = max(1, workers)
	type result struct {
		out map[string]quant.Tensor
		err error
	}
	results := make([]result, len(plan.Layers))
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, lp := range plan.Layers {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			ts := make([]quantstream.Tensor, len(lp.Inputs))
			for j, in := range lp.Inputs {
				ts[j] = quantstream.Tensor{Name: in.Name, Tensor: tensors[in.Name]}
			}
			l, err := quantstream.NewLayer(memory.NewGoAllocator(), lp.Index, lp.Prefix, ts)
			if err != nil {
				results[i].err = err
				return
			}
			ol, err := st.Process(ctx, l)
			if err != nil {
				results[i].err = fmt.Errorf("layer %d: %w", lp.Index, err)
				return
			}
			defer ol.Release()
			m := map[string]quant.Tensor{}
			for _, t := range ol.Tensors() {
				m[t.Name] = quant.Tensor{DType: t.DType, Shape: t.Shape, Data: bytes.Clone(t.Data)}
			}
			results[i].out = m
		}()
	}
	wg.Wait()
	all := map[string]quant.Tensor{}
	var errs []error
	for _, r := range results {
		errs = append(errs, r.err)
		for k, v := range r.out {
			all[k] = v
		}
	}
	return all, errors.Join(errs...)
}

// writeSafetensors writes tensors in name order with a space-padded header (8-byte
// aligned data) and no metadata, as ModelOpt's streaming writer does.
func writeSafetensors(path string, tensors map[string]quant.Tensor) error {
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	type entry struct {
		DType   string  `json:"dtype"`
		Shape   []int64 `json:"shape"`
		Offsets [2]int  `json:"data_offsets"`
	}
	var hdr bytes.Buffer
	hdr.WriteByte('{')
	off := 0
	for i, n := range names {
		t := tensors[n]
		shape := t.Shape
		if shape == nil {
			shape = []int64{}
		}
		k, _ := json.Marshal(n)
		v, _ := json.Marshal(entry{t.DType.String(), shape, [2]int{off, off + len(t.Data)}})
		if i > 0 {
			hdr.WriteByte(',')
		}
		hdr.Write(k)
		hdr.WriteByte(':')
		hdr.Write(v)
		off += len(t.Data)
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(hdr.Len()))
	b.Write(hdr.Bytes())
	for _, n := range names {
		b.Write(tensors[n].Data)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
