package verify

// fnmatch reports whether name matches pattern as Python's fnmatch.fnmatchcase does,
// which is how ModelOpt's exclude_modules wildcards are meant ("model.layers.*.mlp.gate",
// "vision_tower*"): '*' matches any run of characters (dots included), '?' one
// character, "[seq]" / "[!seq]" one character in / not in seq (ranges a-z allowed);
// a '[' without its ']' is a literal. Matching is iterative with one backtrack point,
// so it is linear in practice and never recurses.
func fnmatch(pattern, name string) bool {
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				starP, starN = p, n
				p++
				continue
			case '?':
				p++
				n++
				continue
			case '[':
				if ok, next, valid := matchClass(pattern, p, name[n]); valid {
					if ok {
						p, n = next, n+1
						continue
					}
				} else if name[n] == '[' {
					p++
					n++
					continue
				}
			default:
				if c == name[n] {
					p++
					n++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starN++
		p, n = starP+1, starN
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches c against the class starting at pattern[p] == '['. valid is
// false when the class has no closing ']' (then '[' is a literal, as in Python).
func matchClass(pattern string, p int, c byte) (ok bool, next int, valid bool) {
	i := p + 1
	negate := false
	if i < len(pattern) && pattern[i] == '!' {
		negate = true
		i++
	}
	start := i
	for ; i < len(pattern); i++ {
		if pattern[i] == ']' && i > start {
			break
		}
	}
	if i >= len(pattern) {
		return false, 0, false
	}
	set := pattern[start:i]
	in := false
	for j := 0; j < len(set); j++ {
		if j+2 < len(set) && set[j+1] == '-' {
			if set[j] <= c && c <= set[j+2] {
				in = true
			}
			j += 2
			continue
		}
		if set[j] == c {
			in = true
		}
	}
	return in != negate, i + 1, true
}
