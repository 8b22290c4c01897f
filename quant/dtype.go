package quant

import (
	"errors"
	"fmt"
)

// ErrUnknownDType is returned for a dtype tag this package does not know.
var ErrUnknownDType = errors.New("quant: unknown dtype")

// DType is a tensor element type, named by its safetensors tag.
//
// These tags are part of the safetensors on-disk format: never rename them.
type DType uint8

const (
	Invalid DType = iota
	BOOL
	U8
	I8
	I16
	U16
	I32
	U32
	I64
	U64
	F16
	BF16
	F32
	F64
	F8E4M3 // float8_e4m3fn: no infinities, 0x7F/0xFF are NaN, max 448
	F8E5M2 // float8_e5m2
	F8E8M0 // float8_e8m0fnu: biased exponent only
	F4     // float4_e2m1fn_x2 packed two per byte
	F6E2M3 // float6, packed
	F6E3M2 // float6, packed
	C64    // complex64
	numDTypes
)

var dtypeNames = [numDTypes]string{
	Invalid: "INVALID",
	BOOL:    "BOOL",
	U8:      "U8",
	I8:      "I8",
	I16:     "I16",
	U16:     "U16",
	I32:     "I32",
	U32:     "U32",
	I64:     "I64",
	U64:     "U64",
	F16:     "F16",
	BF16:    "BF16",
	F32:     "F32",
	F64:     "F64",
	F8E4M3:  "F8_E4M3",
	F8E5M2:  "F8_E5M2",
	F8E8M0:  "F8_E8M0",
	F4:      "F4",
	F6E2M3:  "F6_E2M3",
	F6E3M2:  "F6_E3M2",
	C64:     "C64",
}

// dtypeBits is the storage width of one element in bits.
var dtypeBits = [numDTypes]int{
	BOOL: 8, U8: 8, I8: 8, I16: 16, U16: 16, I32: 32, U32: 32, I64: 64, U64: 64,
	F16: 16, BF16: 16, F32: 32, F64: 64, F8E4M3: 8, F8E5M2: 8, F8E8M0: 8,
	F4: 4, F6E2M3: 6, F6E3M2: 6, C64: 64,
}

// ParseDType maps a safetensors dtype tag ("BF16", "F8_E4M3", ...) to a DType.
func ParseDType(s string) (DType, error) {
	for d := BOOL; d < numDTypes; d++ {
		if dtypeNames[d] == s {
			return d, nil
		}
	}
	return Invalid, fmt.Errorf("%w %q", ErrUnknownDType, s)
}

// String returns the safetensors tag.
func (d DType) String() string {
	if d < numDTypes {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Bits is the width of one element in bits (4 and 6 for the packed sub-byte types).
func (d DType) Bits() int {
	if d < numDTypes {
		return dtypeBits[d]
	}
	return 0
}

// Size is the width of one element in bytes; 0 for sub-byte types.
func (d DType) Size() int { return d.Bits() / 8 * btoi(d.Bits()%8 == 0) }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ByteLen is the number of bytes numel elements occupy. Sub-byte types must fill
// whole bytes, as the safetensors format requires; ok is false otherwise or on overflow.
func (d DType) ByteLen(numel int64) (n int64, ok bool) {
	bits := int64(d.Bits())
	if bits == 0 || numel < 0 {
		return 0, false
	}
	if numel > (1<<62)/bits {
		return 0, false
	}
	total := numel * bits
	if total%8 != 0 {
		return 0, false
	}
	return total / 8, true
}
