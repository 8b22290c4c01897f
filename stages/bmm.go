package stages

import (
	"fmt"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/quant"
)

// Batched-matmul experts (Llama4TextExperts, GptOssExperts): one module "<x>.experts"
// with 3-D weights gate_up_proj [E, H, 2F] and down_proj [E, F, H] (input dim before
// output dim) and singular quantizers "<attr>_weight_quantizer" /
// "<attr>_input_quantizer". They export in place: "<x>.experts.gate_up_proj" becomes
// the quantized weight, with "<x>.experts.gate_up_proj_weight_scale" etc. beside it.

var bmmAttrs = []string{"gate_up_proj", "down_proj"}

// discoverBMM finds batched-matmul expert weights: a 3-D "<x>.experts.<attr>" with a
// singular weight quantizer and no per-expert ones. An input quantizer proves
// nothing: transformers-5 fused experts have a singular "<attr>_input_quantizer"
// too, beside their "<attr>_weight_quantizers.<e>".
func discoverBMM(names map[string]quantstream.TensorInfo, qs Quantizers) ([]*Module, error) {
	var mods []*Module
	for _, n := range sortedKeys(names) {
		container, attr := splitLast(n)
		if !strings.HasSuffix(container, "experts") || (attr != "gate_up_proj" && attr != "up_proj" && attr != "down_proj") {
			continue
		}
		wq, okW := qs.Get(container + "." + attr + "_weight_quantizer")
		if _, plural := qs.Get(container + "." + attr + "_weight_quantizers.0"); !okW || plural {
			continue
		}
		iq, okI := qs.Get(container + "." + attr + "_input_quantizer")
		if len(names[n].Shape) != 3 {
			return nil, fmt.Errorf("%w: batched-matmul expert weight %s is %v, want 3-D", ErrShape, n, names[n].Shape)
		}
		if err := checkBMMShapes(container, names); err != nil {
			return nil, err
		}
		m := &Module{Name: container, Attr: attr, Weight: n, BMM: true, Expert: -1}
		m.Parent, m.Proj = splitLast(container)
		m.WQ = wq
		if okI {
			m.IQ = iq
		}
		m.fillBuffers(names)
		if err := m.classify(); err != nil {
			return nil, fmt.Errorf("module %s: %w", m.ID(), err)
		}
		mods = append(mods, m)
	}
	return mods, nil
}

// expertsPair is a 3-D experts container's first projection (gate_up_proj, else a
// non-gated up_proj) with k = 2 (gated) or 1, and both shapes; ok is false unless
// both are 3-D with one expert count.
func expertsPair(names map[string]quantstream.TensorInfo, container string) (attr string, k int64, first, down []int64, ok bool) {
	attr, k = "gate_up_proj", 2
	f, okF := names[container+".gate_up_proj"]
	if !okF {
		attr, k = "up_proj", 1
		f, okF = names[container+".up_proj"]
	}
	d, okD := names[container+".down_proj"]
	first, down = f.Shape, d.Shape
	ok = okF && okD && len(first) == 3 && len(down) == 3 && first[0] == down[0]
	return attr, k, first, down, ok
}

// fitsLayout reports whether an experts pair (expertsPair) has the shapes of layout
// l: fused_3d [E, k·I, H] / [E, H, I], bmm [E, H, k·I] / [E, I, H].
func fitsLayout(l arch.Layout, k int64, first, down []int64) bool {
	switch l {
	case arch.Fused3D:
		return first[2] == down[1] && first[1] == k*down[2]
	case arch.BMM:
		return first[1] == down[2] && first[2] == k*down[1]
	}
	return false
}

// checkBMMShapes checks that a batched-matmul experts container's gate_up_proj and
// down_proj are [E, H, 2I] and [E, I, H] (input dimension before output): the
// transformers-5 fused layout [E, 2I, H] / [E, H, I] under singular quantizers, or
// anything else, would be quantized along the wrong axis. A projection without its
// partner, and non-gated experts (up_proj), are refused: ModelOpt's batched-matmul
// export (_export_bmm_experts) knows gate_up_proj and down_proj only.
func checkBMMShapes(container string, names map[string]quantstream.TensorInfo) error {
	attr, k, g, d, ok := expertsPair(names, container)
	if !ok {
		return fmt.Errorf("%w: %s: batched-matmul experts (<attr>_weight_quantizer) need 3-D gate_up_proj and down_proj of one expert count; the checkpoint has %s %v and down_proj %v: check the quantizer table against the checkpoint", ErrShape, container, attr, g, d)
	}
	if k == 1 {
		return fmt.Errorf("%w: %s: non-gated experts up_proj %v / down_proj %v have batched-matmul quantizers (<attr>_weight_quantizer), which ModelOpt's batched-matmul export does not know (gate_up_proj and down_proj only); transformers-5 fused experts have one quantizer per expert (<attr>_weight_quantizers.<e>): check the quantizer table against the checkpoint", ErrUnsupported, container, g, d)
	}
	if fitsLayout(arch.BMM, k, g, d) {
		return nil
	}
	return fmt.Errorf("%w: %s: gate_up_proj %v and down_proj %v are not batched-matmul experts [E, H, 2I] / [E, I, H], though their quantizers are (<attr>_weight_quantizer); transformers-5 fused experts [E, 2I, H] have one quantizer per expert (<attr>_weight_quantizers.<e>): check the quantizer table against the checkpoint", ErrShape, container, g, d)
}

// checkBMMPerChannel refuses a per-channel FP8 batched-matmul expert weight whose
// amax is not one per expert ([E, 1, 1], axis 0 of [E, in, out]): the export
// quantizes the transposed weight, and another axis would pair scales with the
// wrong rows.
func checkBMMPerChannel(ts *tensorSet, m *Module) error {
	if !m.BMM || m.Format != "fp8_pc_pt" || m.WAmax == "" {
		return nil
	}
	w, a := ts.hdr[m.Weight].Shape, ts.hdr[m.WAmax].Shape
	if len(w) == 3 && len(a) == 3 && a[0] == w[0] && a[1] == 1 && a[2] == 1 {
		return nil
	}
	return fmt.Errorf("%w: %s: per-channel FP8 amax %v of batched-matmul experts %v; only one amax per expert (axis 0, [E, 1, 1]) is supported", ErrUnsupported, m.ID(), a, w)
}

// fillBMMAmax is _export_bmm_experts' set_expert_quantizer_amax, once over the weight
// quantizers of gate_up_proj and down_proj and once over their input quantizers: the
// target is the max of the existing amaxes; with none, weights take max|gate_up_proj|
// and inputs 0.5. Quantizers whose amax is missing or all zero get it (dynamic input
// quantizers excepted).
func fillBMMAmax(ts *tensorSet, mods []*Module) error {
	byContainer := map[string][]*Module{}
	var order []string
	for _, m := range mods {
		if !m.BMM || m.Format == "" {
			continue
		}
		if _, ok := byContainer[m.Name]; !ok {
			order = append(order, m.Name)
		}
		byContainer[m.Name] = append(byContainer[m.Name], m)
	}
	for _, c := range order {
		for _, weight := range []bool{true, false} {
			type slot struct {
				m    *Module
				buf  *string
				name string
			}
			var slots []slot
			for _, m := range byContainer[c] {
				if weight && hasQuant(m.WQ) && len(m.WQ.Sequential) == 0 {
					slots = append(slots, slot{m, &m.WAmax, m.key("weight_quantizer._amax")})
				}
				if !weight && hasQuant(m.IQ) {
					slots = append(slots, slot{m, &m.IAmax, m.key("input_quantizer._amax")})
				}
			}
			have := false
			var best float32
			var need []slot
			for _, s := range slots {
				dynamic := !weight && s.m.IQ.Dynamic
				if *s.buf == "" {
					if !dynamic {
						need = append(need, s)
					}
					continue
				}
				if ts.planning() {
					continue
				}
				v, err := ts.floats(*s.buf)
				if err != nil {
					return err
				}
				if len(v) > 0 {
					if a := maxOf(v); !have || a > best || a != a {
						best, have = a, true
					}
				}
				if allZero(v) && !dynamic {
					need = append(need, s)
				}
			}
			if len(need) == 0 {
				continue
			}
			if ts.planning() {
				for _, s := range need {
					*s.buf = s.name
					ts.setHeader(s.name, quant.F32, nil)
				}
				continue
			}
			if !have {
				best = 0.5
				if weight {
					// The weight-statistics fallback reads the module's first weight
					// attribute ("weight", "gate_up_proj", "down_proj") for every quantizer.
					src := c + ".gate_up_proj"
					if !ts.has(src) {
						src = c + ".down_proj"
					}
					w, err := ts.floats(src)
					if err != nil {
						return err
					}
					best = absMax(w)
				}
			}
			for _, s := range need {
				*s.buf = s.name
				if err := ts.setFloats(s.name, quant.F32, nil, []float32{best}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// bmmExportHeaders are the exported shapes of a BMM expert weight [E, A, B]. NVFP4
// formats quantize the transposed weight and transpose back (packed along A); MXFP4 is
// not transposed (packed along B); per-tensor FP8 keeps the shape.
func bmmExportHeaders(m *Module, w quantstream.TensorInfo) (map[string]quantstream.TensorInfo, error) {
	if len(w.Shape) != 3 {
		return nil, fmt.Errorf("%w: %s: BMM expert weight %v", ErrShape, m.Weight, w.Shape)
	}
	E, A, B := w.Shape[0], w.Shape[1], w.Shape[2]
	bk := int64(m.Block)
	scalar := quantstream.TensorInfo{DType: quant.F32, Shape: []int64{}}
	out := map[string]quantstream.TensorInfo{}
	switch m.Format {
	case "fp8":
		out["weight"] = header(quant.F8E4M3, []int64{E, A, B})
		out["weight_scale"] = scalar
	case "fp8_pc_pt":
		// Per channel along axis 0 of the 3-D weight: one amax per expert
		// ([E, 1, 1], checkBMMPerChannel), exported squeezed.
		out["weight"] = header(quant.F8E4M3, []int64{E, A, B})
		out["weight_scale"] = header(quant.F32, squeezed([]int64{E}))
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4":
		if bk <= 0 || bk%2 != 0 || A%bk != 0 {
			return nil, fmt.Errorf("%w: %s: input size %d not divisible by block %d", ErrShape, m.Weight, A, bk)
		}
		out["weight"] = header(quant.U8, []int64{E, A / 2, B})
		out["weight_scale"] = header(quant.F8E4M3, []int64{E, A / bk, B})
		out["weight_scale_2"] = scalar
	case "mxfp4", "w4a8_mxfp4_fp8":
		if bk <= 0 || B%bk != 0 {
			return nil, fmt.Errorf("%w: %s: last dim %d not divisible by block %d", ErrShape, m.Weight, B, bk)
		}
		out["weight"] = header(quant.U8, []int64{E, A, B / 2})
		out["weight_scale"] = header(quant.U8, []int64{E, A, B / bk})
	default:
		return nil, fmt.Errorf("%w: %s: %s export of batched-matmul experts", ErrUnsupported, m.Weight, m.Format)
	}
	if m.Format != "mxfp4" && m.Format != "w4a8_mxfp4_fp8" && m.WAmax == "" {
		return nil, fmt.Errorf("%w: %s: %s weight quantizer has no _amax", ErrMissingAmax, m.ID(), m.Format)
	}
	if hasInputScale(m) {
		out["input_scale"] = scalar
	}
	return out, nil
}
