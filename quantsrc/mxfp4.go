package quantsrc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/quant"
)

// mxfp4Projections are the expert projections gpt-oss stores as MXFP4.
var mxfp4Projections = []string{"gate_up_proj", "down_proj"}

// mxfp4Dims is what config.json says the experts' shapes are.
type mxfp4Dims struct {
	Experts      *int64 `json:"num_local_experts"`
	Hidden       *int64 `json:"hidden_size"`
	Intermediate *int64 `json:"intermediate_size"`
	Text         *struct {
		Experts      *int64 `json:"num_local_experts"`
		Hidden       *int64 `json:"hidden_size"`
		Intermediate *int64 `json:"intermediate_size"`
	} `json:"text_config"`
}

// detectMXFP4 checks a quant_method "mxfp4" source: experts stored as
// <c>.<p>_blocks U8 [E, R, G, 16] with <c>.<p>_scales U8 [E, R, G], <c> an experts
// container and <p> gate_up_proj (R = 2·intermediate, 32·G = hidden) or down_proj
// (R = hidden, 32·G = intermediate), E experts as config.json says, outside
// modules_to_not_convert; nothing else may be quantized data.
func detectMXFP4(qc *quantConfig, configJSON []byte, byName map[string]quantstream.TensorInfo, tensors []quantstream.TensorInfo) (*Scheme, error) {
	if err := checkKeys(qc, "quant_method", "modules_to_not_convert", "dequantize"); err != nil {
		return nil, err
	}
	nc, err := parseNotConverted(qc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, qc.where, err)
	}
	var d mxfp4Dims
	if err := json.Unmarshal(configJSON, &d); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, qc.where, err)
	}
	if d.Text != nil {
		d.Experts = cmpOr(d.Experts, d.Text.Experts)
		d.Hidden = cmpOr(d.Hidden, d.Text.Hidden)
		d.Intermediate = cmpOr(d.Intermediate, d.Text.Intermediate)
	}
	if d.Experts == nil || d.Hidden == nil || d.Intermediate == nil {
		return nil, fmt.Errorf("%w: %s: an mxfp4 source needs num_local_experts, hidden_size and intermediate_size to check its experts' shapes", ErrInvalid, qc.where)
	}
	s := &Scheme{Method: MXFP4, Key: qc.key}
	var problems []error
	problem := func(format string, a ...any) {
		problems = append(problems, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...))
	}
	known := map[string]bool{}
	for _, t := range tensors {
		base, isBlocks := strings.CutSuffix(t.Name, "_blocks")
		if !isBlocks {
			if b, ok := strings.CutSuffix(t.Name, "_scales"); ok && t.DType == quant.U8 {
				if _, has := byName[b+"_blocks"]; !has {
					problem("%s has no %s_blocks", t.Name, b)
					known[t.Name] = true
				}
			}
			continue
		}
		known[t.Name] = true
		container, proj := splitLast(base)
		sc, hasScales := byName[base+"_scales"]
		known[base+"_scales"] = hasScales
		switch {
		case !slices.Contains(mxfp4Projections, proj) || !(container == "experts" || strings.HasSuffix(container, ".experts")):
			problem("tensor %s: an mxfp4 source stores <experts>.gate_up_proj_blocks and <experts>.down_proj_blocks only", t.Name)
			continue
		case t.DType != quant.U8 || len(t.Shape) != 4 || t.Shape[3] != quant.MXFP4BlockBytes:
			problem("%s is %s %v, want U8 [experts, rows, blocks, 16]", t.Name, t.DType, t.Shape)
			continue
		case !hasScales:
			problem("%s has no %s_scales", t.Name, base)
			continue
		case sc.DType != quant.U8 || !slices.Equal(sc.Shape, t.Shape[:3]):
			problem("%s_scales is %s %v, want U8 %v to match %s", base, sc.DType, sc.Shape, t.Shape[:3], t.Name)
			continue
		case nc.has(container):
			problem("%s is MXFP4, but %s lists %s in modules_to_not_convert", t.Name, qc.key, container)
			continue
		}
		if _, clash := byName[base]; clash {
			problem("%s and %s are both in the checkpoint", t.Name, base)
			continue
		}
		E, R, G := t.Shape[0], t.Shape[1], t.Shape[2]
		wantR, wantC := 2**d.Intermediate, *d.Hidden
		if proj == "down_proj" {
			wantR, wantC = *d.Hidden, *d.Intermediate
		}
		if E != *d.Experts || R != wantR || 32*G != wantC {
			problem("%s %v holds %d experts of %d×%d; config.json (num_local_experts %d, hidden_size %d, intermediate_size %d) says %d of %d×%d",
				t.Name, t.Shape, E, R, 32*G, *d.Experts, *d.Hidden, *d.Intermediate, *d.Experts, wantR, wantC)
			continue
		}
		s.mx = append(s.mx, mxWeight{name: base, blocks: t.Name, scales: base + "_scales", experts: int(E), rows: int(R), groups: int(G)})
	}
	if other := quantizedTensors(tensors, known); len(other) > 0 {
		problem("tensors that an mxfp4 source does not hold, so quantstream cannot tell what they are: %s", listSome(other))
	}
	if len(s.mx) == 0 && len(problems) == 0 {
		problem("%s says quant_method mxfp4, but there are no *_blocks / *_scales expert tensors", qc.key)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s:\n%w", qc.where, errors.Join(problems...))
	}
	sort.Slice(s.mx, func(i, j int) bool { return s.mx[i].name < s.mx[j].name })
	return s, nil
}

func cmpOr(a, b *int64) *int64 {
	if a != nil {
		return a
	}
	return b
}

func splitLast(name string) (string, string) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

// mxDerived is the BF16 hub tensor an MXFP4 expert projection reads as:
// <c>.<p> [E, 32·G, R], the transpose of the stored rows.
func (s *Scheme) mxDerived(w mxWeight) arrowio.Derived {
	return arrowio.Derived{
		TensorInfo: quantstream.TensorInfo{Name: w.name, DType: quant.BF16, Shape: []int64{int64(w.experts), int64(32 * w.groups), int64(w.rows)}},
		From:       []string{w.blocks, w.scales},
		Fill: func(ctx context.Context, dst []byte, from []arrowio.TensorRef) error {
			return fillMXFP4(ctx, dst, w, from[0], from[1])
		},
	}
}

// fillMXFP4 decodes one expert per task, on all cores: each reads that expert's
// blocks and scales and writes its transposed BF16 slice of dst.
func fillMXFP4(ctx context.Context, dst []byte, w mxWeight, blocks, scales arrowio.TensorRef) error {
	nb, ns := w.rows*w.groups*quant.MXFP4BlockBytes, w.rows*w.groups
	out := 2 * 32 * w.groups * w.rows
	bs, ss := blocks.Section(), scales.Section()
	tasks := make([]parallel.Task, w.experts)
	for e := range w.experts {
		tasks[e] = func() error {
			buf := codeBuffer(nb + ns)
			defer putCodeBuffer(buf)
			b, sc := (*buf)[:nb], (*buf)[nb:]
			if n, err := bs.ReadAt(b, int64(e*nb)); n != nb {
				return fmt.Errorf("reading %s expert %d: %w", w.blocks, e, err)
			}
			if n, err := ss.ReadAt(sc, int64(e*ns)); n != ns {
				return fmt.Errorf("reading %s expert %d: %w", w.scales, e, err)
			}
			if err := quant.MXFP4DequantTransposed(dst[e*out:(e+1)*out], b, sc, w.rows, w.groups); err != nil {
				return fmt.Errorf("expert %d: %w", e, err)
			}
			return nil
		}
	}
	return parallel.Run(ctx, tasks)
}
