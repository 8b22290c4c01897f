// Package pipeline runs a conversion: a quantstream.Source of layers, a chain of
// quantstream.Stages, a quantstream.Sink, with a context, first-error-wins,
// drain-on-cancel, source order restored at the sink, and a bound on bytes in flight.
//
// # Model
//
// Run first plans: it takes every layer's headers from Source.Layers, passes them
// through each Stage's Plan, and so knows, before reading any data, each layer's size
// after every stage (Plan). A layer that cannot fit in MaxMemory is refused here,
// with an error wrapping ErrOverBudget that states the bytes it needs; no layer is
// ever admitted alone over the budget. Then it streams, on go-streams:
//
//	source ──▶ StageFlow 1 ──▶ StageFlow 2 ──▶ … ──▶ StageFlow n ──▶ sink
//	(1 goroutine,  (Workers       (Workers              (Workers      (1 goroutine:
//	 charges the    goroutines)    goroutines)           goroutines)   reorder buffer,
//	 budget, Next)                                                     Write, Progress)
//
// Every arrow is an unbuffered channel and a go-streams Via. Each stage runs on
// Workers goroutines, so layers overtake each other; the sink holds early arrivals in
// a reorder buffer and writes strictly in source order. Stages work on one layer at
// a time and the sink's order is fixed, so the output does not depend on Workers.
//
// # Memory bound
//
// Let B[i][0] be the data bytes of layer i as read, B[i][k] its planned data bytes
// after stage k, N[i][k] ≤ B[i][k] the bytes of those stage k allocates anew
// (B[i][k] unless the stage is a BufferReuser that hands on its input's buffer),
// n the number of stages, and N[i][n+1] = 0. Layer i is charged
//
//	C[i][k] = max over j = k … n of (B[i][j] + N[i][j+1])
//
// while it waits for or runs through stage k+1 (k = n: at the sink, its reorder
// buffer included), since a stage holds its input and what it allocates until it
// releases the input. The source charges C[i][0] before calling Next, blocking until
// it fits; after each stage the charge falls to C[i][k+1] (never rising, because it
// is a maximum over what is left); the last of it is returned after the sink's Write
// and the layer's Release. Hence, at every instant,
//
//	data bytes in flight ≤ Σ charges in flight ≤ min(MaxMemory, MaxLayers × max_i C[i][0])
//
// with MaxLayers = Workers × (n + 1) by default: Workers layers in each stage plus as
// many waiting in hand-offs and the reorder buffer. Run refuses a plan in which some
// C[i][0] > MaxMemory.
//
// The bound holds because sizes are checked, not trusted: a layer from the source
// and the output of every stage must match the plan tensor for tensor (name, dtype,
// shape, data length) or the run fails with ErrPlanMismatch. What is counted is tensor
// data. Not counted: per-tensor metadata (names, dtypes, shapes, offsets), allocator
// slack (an Arrow builder grows its data buffer by doubling), a stage's scratch
// memory, what the source buffers internally, and layers a sink Retains after Write.
//
// # Ownership
//
// A *quantstream.Layer has one owner at a time, who releases it or hands it on:
//
//   - Source.Next hands a new layer to the pipeline.
//   - Stage.Process owns its input. It returns its output (the input itself or a new
//     layer, having released the input). On error it must have released its input
//     and should return a nil layer; a layer returned with an error is released by
//     the pipeline. A stage that panics must release its input in a defer, or the
//     input leaks; the panic becomes an error wrapping ErrPanic.
//   - Sink.Write borrows its layer; the pipeline releases it when Write returns.
//   - On error or cancellation, the pipeline releases every layer it holds, in
//     hand-offs and in the reorder buffer.
//
// # Concurrency
//
// Source.Next and Sink.Write are each called from one goroutine, Source.Next in
// order and Sink.Write in source order. Stage.Process is called concurrently on
// different layers.
//
// Workers and the parallelism inside a layer combine as follows. Workers is how
// many layers each stage processes at once (and, with the stage count, how many
// layers are in flight: MaxLayers). Within one layer, a stage may spread its work
// over the cores itself: the export and calibration stages (packages stages and
// convert) cut a layer into row ranges and run them on up to GOMAXPROCS goroutines
// each, returning only when all have finished. So at most Workers × len(Stages)
// layers are being computed at once, each on up to GOMAXPROCS goroutines; the CPU
// time they share is bounded by GOMAXPROCS as for any Go program, and memory is
// bounded by the budget below, not by the goroutines. With few cores, Workers 1 or 2
// already keeps every core busy on large layers; more Workers help when layers are
// small or a stage does not parallelise itself. Output bytes depend on neither. Every send watches the run's context. The first error cancels
// that context; from then on every goroutine drains its input, releasing each layer,
// until its input is closed, so no sender is left blocked and no layer is lost. Run
// returns after every goroutine it started has exited, with the first error; it
// therefore waits for a Next, Process or Write in progress, which must watch ctx.
//
// StageFlow puts one Stage into a go-streams flow of your own; there errors travel
// downstream as *StageError elements instead of stopping the stream.
package pipeline
