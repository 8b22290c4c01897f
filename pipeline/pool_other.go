//go:build !linux

package pipeline

import "unsafe"

const poolAlign = 64

// mapBytes takes n zeroed, 64-byte aligned bytes from the Go heap where there is
// no mmap; unmapBytes then leaves them to the garbage collector.
func mapBytes(n int) []byte {
	raw := make([]byte, n+poolAlign)
	shift := (poolAlign - int(uintptr(unsafe.Pointer(&raw[0])))%poolAlign) % poolAlign
	return raw[shift : shift+n : shift+n]
}

func unmapBytes([]byte) {}

// releaseTail has nothing to give back where buffers live on the Go heap.
func releaseTail([]byte, int) {}
