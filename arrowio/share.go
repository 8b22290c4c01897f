package arrowio

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// MaxShares bounds the number of shares an output can be split into.
const MaxShares = 4096

// ErrShare marks a share specification that does not name one of N shares.
var ErrShare = errors.New("arrowio: bad share")

// Share names one of Count shares of an output's shards (convert --shard
// Index/Count). The zero Share is the whole output.
type Share struct {
	Index, Count int
}

// Whole reports whether s is the whole output rather than one share.
func (s Share) Whole() bool { return s.Count == 0 }

func (s Share) String() string {
	if s.Whole() {
		return "all"
	}
	return fmt.Sprintf("%d/%d", s.Index, s.Count)
}

// ParseShare reads "I/N" (0 ≤ I < N ≤ MaxShares).
func ParseShare(v string) (Share, error) {
	i, n, ok := strings.Cut(v, "/")
	a, err1 := strconv.Atoi(i)
	b, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || b < 1 || b > MaxShares || a < 0 || a >= b {
		return Share{}, fmt.Errorf("%w: %q: want I/N with 0 <= I < N <= %d (share I of N, counted from 0)", ErrShare, v, MaxShares)
	}
	return Share{Index: a, Count: b}, nil
}

// SplitShares cuts shards 0..len(costs)-1, in order, into n contiguous runs of
// about equal total cost and returns the first shard of each run and, last,
// len(costs): run i is shards [cut[i], cut[i+1]). Each cut is the shard boundary
// nearest to i/n of the total (the earlier one on a tie), never before the previous
// cut, so shares are whole shards and some are empty only when there are fewer
// shards than shares. The result depends on costs and n alone: every worker
// computes the same split.
func SplitShares(costs []int64, n int) []int {
	prefix := make([]uint64, len(costs)+1)
	for i, c := range costs {
		prefix[i+1] = prefix[i] + uint64(max(c, 0))
	}
	total := prefix[len(costs)]
	cut := make([]int, n+1)
	cut[n] = len(costs)
	j := 0
	for i := 1; i < n; i++ {
		// The boundary j minimizing |prefix[j]·n − total·i| (128-bit products).
		for j < len(costs) && closer(prefix[j+1], prefix[j], total, uint64(i), uint64(n)) {
			j++
		}
		cut[i] = j
	}
	return cut
}

// closer reports whether boundary value a is strictly nearer to total·i/n than b
// (b ≤ a), comparing |a·n − total·i| with |b·n − total·i| exactly.
func closer(a, b, total, i, n uint64) bool {
	th, tl := bits.Mul64(total, i)
	dist := func(x uint64) (uint64, uint64) {
		xh, xl := bits.Mul64(x, n)
		if xh > th || (xh == th && xl >= tl) {
			l, borrow := bits.Sub64(xl, tl, 0)
			h, _ := bits.Sub64(xh, th, borrow)
			return h, l
		}
		l, borrow := bits.Sub64(tl, xl, 0)
		h, _ := bits.Sub64(th, xh, borrow)
		return h, l
	}
	ah, al := dist(a)
	bh, bl := dist(b)
	return ah < bh || (ah == bh && al < bl)
}

// shards returns the range [lo, hi) of shards of share s in a split (SplitShares).
func (s Share) shards(cut []int) (lo, hi int) {
	return cut[s.Index], cut[s.Index+1]
}
