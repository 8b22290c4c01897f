package stages

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// BenchmarkStageProcess exports one Llama decoder layer (hidden 1024, KV 256,
// intermediate 2816, ~13 M BF16 weights); MB/s counts input bytes.
func BenchmarkStageProcess(b *testing.B) {
	for _, f := range []struct {
		name string
		q    func(bool) *quant.Quantizer
	}{{"nvfp4", nvfp4Q}, {"fp8", fp8Q}} {
		b.Run(f.name, func(b *testing.B) {
			sd, qs := llama(1, 1024, 256, 2816, 64)
			for n, q := range qs {
				if q.NumBits == quant.BitsE2M1 {
					qs[n] = f.q(q.Enabled)
				}
			}
			p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
			if err != nil {
				b.Fatal(err)
			}
			mem := memory.NewGoAllocator()
			st := NewStage(p, mem)
			lp := p.Layer(0)
			in := make([]quantstream.Tensor, len(lp.Inputs))
			var size int64
			for i, h := range lp.Inputs {
				in[i] = quantstream.Tensor{Name: h.Name, Tensor: sd[h.Name]}
				size += int64(len(sd[h.Name].Data))
			}
			b.SetBytes(size)
			for b.Loop() {
				l, err := quantstream.NewLayer(mem, lp.Index, lp.Prefix, in)
				if err != nil {
					b.Fatal(err)
				}
				out, err := st.Process(b.Context(), l)
				if err != nil {
					b.Fatal(err)
				}
				out.Release()
			}
		})
	}
}
