package policy

import (
	"encoding/json"
	"fmt"
)

// Size limits of a policy document, enforced before the YAML parser builds
// anything, so that every input is refused or accepted in bounded memory.
// The YAML parser costs about 230 bytes per node whatever the document's
// shape, so the node limit is what bounds memory (to about 100 MB); the byte
// limit bounds the rest (long strings, comments). A fleet of 20,000
// services, each with an endpoint and a subset, is about 2.5 MB and 340,000
// nodes.
const (
	// MaxDocumentSize is the largest document Parse, ParseService and the
	// sources accept, in bytes.
	MaxDocumentSize = 8 << 20
	// maxNodes bounds the YAML nodes of a document: counted (over-estimated)
	// before parsing, and visited (aliases followed) while decoding, so an
	// alias bomb fails fast too.
	maxNodes = 450_000
	// maxProblems bounds the problems one error lists.
	maxProblems = 100
)

// checkSize refuses data larger than MaxDocumentSize, or with more YAML
// nodes than maxNodes by countNodes, before any parsing.
func checkSize(data []byte, path string) error {
	if len(data) > MaxDocumentSize {
		return invalid(path, fmt.Sprintf("document too large: %d bytes, at most %d (%d MiB)", len(data), MaxDocumentSize, MaxDocumentSize>>20))
	}
	if n := countNodes(data, maxNodes); n > maxNodes {
		return invalid(path, fmt.Sprintf("document too large: more than %d YAML nodes", maxNodes))
	}
	return nil
}

// countNodes returns an upper bound of the nodes the YAML parser builds for
// data, or a number above limit as soon as it passes limit. It allocates
// nothing. Valid JSON is counted exactly; YAML is over-estimated.
func countNodes(data []byte, limit int) int {
	if json.Valid(data) {
		return countJSON(data, limit)
	}
	return countYAML(data, limit)
}

// countJSON counts the values and keys of valid JSON, plus the document
// node: exactly the nodes of its YAML parse.
func countJSON(data []byte, limit int) int {
	n := 1
	for i := 0; i < len(data) && n <= limit; i++ {
		switch c := data[i]; {
		case c == '"':
			n++
			for i++; data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
		case c == '{' || c == '[':
			n++
		case c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n':
			n++
			for i+1 < len(data) && !isJSONDelim(data[i+1]) {
				i++
			}
		}
	}
	return n
}

func isJSONDelim(c byte) bool {
	switch c {
	case ',', ']', '}', ':', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// yamlCounter over-estimates the nodes of a YAML text line by line. Every
// byte is looked at (no quote or comment is skipped, so that no structure can
// hide in what looks like a string), and a count is left out only where the
// YAML grammar guarantees that no node starts:
//
//   - a key at the column of the previous line's key (and no "-", "?" or
//     flow indicator before it) continues that line's mapping;
//   - a "- " first on its line at the column of the previous line's first
//     "- " continues that line's sequence;
//   - a ":" or "- " that ends its line has a null value only when the next
//     line is not indented more (else that line holds the value);
//   - a ":" inside a flow mapping opened on the same line starts nothing.
//
// Lines holding quotes, comments, tabs, block scalars, anchors, aliases,
// tags or directives never use the first two exemptions, whose reasoning
// they could defeat.
type yamlCounter struct {
	n, limit int

	// The previous content line, for the exemptions.
	prevKeyCol  int // column of its first key, -1 if none
	prevDashCol int // column of its leading "- ", -1 if none
	prevFlow    bool
	prevPlain   bool // no character that disqualifies it

	pendingCol int // a ":" or "- " ended the previous content line at this column; -1 if none
}

func countYAML(data []byte, limit int) int {
	y := yamlCounter{n: 2, limit: limit, prevKeyCol: -1, prevDashCol: -1, pendingCol: -1} // document and root
	for start := 0; start < len(data) && y.n <= limit; {
		end := start
		for end < len(data) && data[end] != '\n' {
			end++
		}
		y.line(data[start:end])
		start = end + 1
	}
	if y.pendingCol >= 0 {
		y.n++ // the value of the last line's ":" or "- " is null
	}
	return y.n
}

// flowFrame is one flow collection opened on the current line.
type flowFrame struct {
	mapping  bool
	key      bool // the current entry has a key
	colon    bool // ... and a ":"
	valued   bool // ... and a value after it
	explicit bool // the frame is exact (the line is plain)
}

// line counts one line (without its newline).
func (y *yamlCounter) line(l []byte) {
	indent := 0
	for indent < len(l) && (l[indent] == ' ' || l[indent] == '\r') {
		indent++
	}
	if indent == len(l) {
		return // blank: not a content line
	}
	if y.pendingCol >= 0 && indent <= y.pendingCol {
		y.n++ // not indented more: the pending value is null
	}
	y.pendingCol = -1

	plain := true
	for _, c := range l {
		switch c {
		case '"', '\'', '#', '\t', '|', '>', '&', '*', '!', '%', '@', '`', '\r':
			plain = false
		}
	}

	var (
		stack    [16]flowFrame
		depth    int  // frames on stack; beyond len(stack), counting is conservative
		overflow int  // frames opened beyond len(stack)
		flow     bool // a flow indicator was seen on the line
		pieces   int  // scalars (or other runs) seen on the line so far
		colons   int  // ":" indicators seen on the line so far
		dashes   int  // "- " indicators seen on the line so far
		keyCol   = -1
		dashCol  = -1
		lastCol  = -1 // column deciding the value of an indicator that ends the line; -1 if none
		inPiece  bool
		pieceCol int
	)
	frame := func() *flowFrame {
		if depth > 0 && depth <= len(stack) && overflow == 0 {
			return &stack[depth-1]
		}
		return nil
	}
	for i := indent; i < len(l); i++ {
		c := l[i]
		next := byte(' ')
		if i+1 < len(l) {
			next = l[i+1]
		}
		sep := next == ' ' || next == '\t' || next == '\r'
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			inPiece = false
			continue
		case c == '[' || c == '{':
			inPiece = false
			flow = true
			y.n++
			if depth < len(stack) && overflow == 0 {
				stack[depth] = flowFrame{mapping: c == '{', explicit: plain}
				depth++
			} else {
				overflow++
			}
			continue
		case c == ']' || c == '}':
			inPiece = false
			flow = true
			if f := frame(); f != nil && f.explicit && f.mapping {
				if f.key && (!f.colon || !f.valued) {
					y.n++ // the last entry's value is null
				}
			} else {
				y.n++ // possibly a null value
			}
			if overflow > 0 {
				overflow--
			} else if depth > 0 {
				depth--
			}
			continue
		case c == ',':
			inPiece = false
			flow = true
			if f := frame(); f != nil && f.explicit && f.mapping {
				if f.key && (!f.colon || !f.valued) {
					y.n++
				}
				*f = flowFrame{mapping: true, explicit: true}
			} else {
				y.n++
			}
			continue
		case c == ':' && (sep || !inPiece || !plain || depth > 0 && isFlowIndicator(next)):
			// On a line with quotes, any ":" may be an indicator
			// ("a":1): count it.
			inPiece = false
			colons++
			lastCol = i
			if f := frame(); f != nil && f.explicit && f.mapping {
				f.colon = true // a flow mapping's ":" starts nothing
				continue
			}
			if colons == 1 && pieces == 1 && !flow {
				keyCol = pieceCol
				lastCol = keyCol // a value on the next lines is indented more than its key
				if dashes == 0 && plain && y.prevPlain && !y.prevFlow && y.prevKeyCol == keyCol {
					continue // same mapping as the previous line
				}
			}
			y.n++ // a new mapping, or a single-pair one in a flow sequence
			continue
		case (c == '-' || c == '?') && !inPiece && sep:
			lastCol = i
			if c == '?' {
				y.n += 2
				continue
			}
			dashes++
			if dashes == 1 && pieces == 0 && !flow && colons == 0 {
				dashCol = i
				if plain && y.prevPlain && !y.prevFlow && y.prevDashCol == i {
					continue // same sequence as the previous line
				}
			}
			y.n++ // a new sequence
			continue
		}
		if !inPiece {
			inPiece = true
			pieces++
			pieceCol = i
			lastCol = -1
			y.n++
			if f := frame(); f != nil {
				if f.colon {
					f.valued = true
				} else {
					f.key = true
				}
			}
		}
	}
	if lastCol >= 0 {
		if depth > 0 || overflow > 0 {
			y.n++ // inside a flow collection: be conservative
		} else {
			y.pendingCol = lastCol
		}
	}
	if depth > 0 || overflow > 0 {
		flow = true // a flow collection continues on the next line
	}
	y.prevKeyCol, y.prevDashCol, y.prevFlow, y.prevPlain = keyCol, dashCol, flow, plain
}

func isFlowIndicator(c byte) bool {
	switch c {
	case '[', ']', '{', '}', ',':
		return true
	}
	return false
}

// capped returns problems, followed, when dropped > 0, by one problem that
// says how many more were found.
func capped(problems []FieldError, dropped int) []FieldError {
	if dropped == 0 {
		return problems
	}
	return append(problems, FieldError{Msg: fmt.Sprintf("and %d more problems", dropped)})
}
