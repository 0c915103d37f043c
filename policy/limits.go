package policy

import (
	"encoding/json"
	"fmt"
	"math"
)

// Size limits of a policy document, enforced before the YAML parser builds
// anything, so that every input is refused or accepted in bounded memory
// (and time: under half a second on one core).
//
// The YAML parser's tree costs 200 to 600 bytes per node depending on its
// kind (a plain scalar that begins like a number or a date costs most), and
// up to 20 bytes per byte of a scalar's text. So the nodes are counted
// before parsing, each charged the measured cost of its kind (plus what
// decoding it costs), and a document whose charge passes maxParseCost is
// refused: "would take more than 150 MB to parse". The charges are upper
// bounds for the costliest shapes (long flat lists); a real document costs
// about 70% of its charge. A fleet of 20,000 services, each with an
// endpoint and a subset (2.5 MB, 340,000 nodes), is charged 141 MB (YAML)
// or 127 MB (JSON) and allocates 99 MB or 93 MB; no accepted document
// allocates more than 150 MB in Parse.
//
// What NewSnapshot builds per service and per route is bounded by
// MaxServices and MaxResolvedRoutes, checked once the document is decoded.
const (
	// MaxDocumentSize is the largest document Parse, ParseService and the
	// sources accept, in bytes.
	MaxDocumentSize = 8 << 20
	// maxNodes bounds the YAML nodes of a document: counted (over-estimated)
	// before parsing, and visited (aliases followed) while decoding, so an
	// alias bomb fails fast too.
	maxNodes = 450_000
	// maxParseCost bounds what Parse may allocate, in bytes, by the costs
	// of the nodes countNodes counts: the 20,000-service fleet's charge
	// with 6% to spare.
	maxParseCost = 150_000_000
	// maxProblems bounds the problems one error lists.
	maxProblems = 100

	// MaxServices is the most services a document may name: 2.5 times a
	// fleet of 20,000. Each costs NewSnapshot about 800 bytes however
	// little the document says of it (a line "name:" is enough).
	MaxServices = 50_000
	// MaxResolvedRoutes bounds the routes a snapshot resolves: for every
	// service, its own routes, or the defaults' routes it inherits, or its
	// one implicit route. Each costs NewSnapshot about 250 bytes, and
	// inherited routes multiply: 200 default routes and 20,000 services
	// are 4 million routes (1 GB) from 200 kB of YAML. A fleet of 20,000
	// services with 5 routes each fits.
	MaxResolvedRoutes = 100_000
)

// checkResolvedSize refuses a document whose snapshot would resolve more
// than MaxServices services or MaxResolvedRoutes routes, so that NewSnapshot
// of any document Parse accepts costs at most about 70 MB beyond the
// document's own copy.
func checkResolvedSize(doc *Document) error {
	if len(doc.Services) > MaxServices {
		return invalid("services", fmt.Sprintf("too many services: %d, at most %d", len(doc.Services), MaxServices))
	}
	inherited := 1
	if doc.Defaults != nil && len(doc.Defaults.Routes) > 0 {
		inherited = len(doc.Defaults.Routes)
	}
	routes := 0
	for _, svc := range doc.Services {
		if svc != nil && len(svc.Routes) > 0 {
			routes += len(svc.Routes)
		} else {
			routes += inherited
		}
	}
	if routes > MaxResolvedRoutes {
		return invalid("services", fmt.Sprintf("too many routes: the services resolve to %d routes (their own, or the %d of defaults.routes each inherits), at most %d", routes, inherited, MaxResolvedRoutes))
	}
	return nil
}

// checkSize refuses data larger than MaxDocumentSize, with more YAML nodes
// than maxNodes by countNodes, or whose parse would cost more than
// maxParseCost by the same count, before any parsing.
func checkSize(data []byte, path string) error {
	if len(data) > MaxDocumentSize {
		return invalid(path, fmt.Sprintf("document too large: %d bytes, at most %d (%d MiB)", len(data), MaxDocumentSize, MaxDocumentSize>>20))
	}
	n, cost := measure(data, maxNodes, maxParseCost)
	if cost > maxParseCost && n <= maxNodes {
		n = countNodes(data, maxNodes) // name the node limit when it is passed too
	}
	if n > maxNodes {
		return invalid(path, fmt.Sprintf("document too large: more than %d YAML nodes", maxNodes))
	}
	if cost > maxParseCost {
		return invalid(path, fmt.Sprintf("document too large: would take more than %d MB to parse", maxParseCost/1_000_000))
	}
	return nil
}

// countNodes returns an upper bound of the nodes the YAML parser builds for
// data, or a number above limit as soon as it passes limit. It allocates
// nothing. Valid JSON is counted exactly; YAML is over-estimated.
func countNodes(data []byte, limit int) int {
	n, _ := measure(data, limit, math.MaxInt64)
	return n
}

// measure returns countNodes(data) and the bytes parsing data would
// allocate by the costs of its nodes, stopping as soon as either passes its
// limit.
func measure(data []byte, limit int, costLimit int64) (int, int64) {
	if json.Valid(data) {
		return countJSON(data, limit, costLimit)
	}
	return countYAML(data, limit, costLimit)
}

// countJSON counts the values and keys of valid JSON, plus the document
// node: exactly the nodes of its YAML parse; and their cost.
func countJSON(data []byte, limit int, costLimit int64) (int, int64) {
	n, cost := 1, int64(costCollection)
	for i := 0; i < len(data) && n <= limit && cost <= costLimit; i++ {
		switch c := data[i]; {
		case c == '"':
			n++
			start := i
			for i++; data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
			cost += costScalar + perByteScalar*int64(i-start)
		case c == '{' || c == '[':
			n++
			cost += costCollection
		case c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n':
			n++
			start := i
			for i+1 < len(data) && !isJSONDelim(data[i+1]) {
				i++
			}
			base, perByte := scalarCost(data[start:])
			cost += base + perByte*int64(i+1-start)
		}
	}
	return n, cost
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
	n, limit        int
	cost, costLimit int64
	carry           int64 // per-byte cost of a plain scalar that may go on: its costliest piece since the last indicator

	// The previous content line, for the exemptions.
	prevKeyCol  int // column of its first key, -1 if none
	prevDashCol int // column of its leading "- ", -1 if none
	prevFlow    bool
	prevPlain   bool // no character that disqualifies it

	pendingCol int // a ":" or "- " ended the previous content line at this column; -1 if none
}

func countYAML(data []byte, limit int, costLimit int64) (int, int64) {
	y := yamlCounter{n: 2, limit: limit, cost: 2 * costCollection, costLimit: costLimit, prevKeyCol: -1, prevDashCol: -1, pendingCol: -1} // document and root
	for start := 0; start < len(data) && y.n <= limit && y.cost <= costLimit; {
		end := start
		for end < len(data) && data[end] != '\n' {
			end++
		}
		y.line(data[start:end])
		start = end + 1
	}
	if y.pendingCol >= 0 {
		y.add(costNull) // the value of the last line's ":" or "- " is null
	}
	return y.n, y.cost
}

// add counts a node of the given cost.
func (y *yamlCounter) add(cost int64) {
	y.n++
	y.cost += cost
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
		y.add(costNull) // not indented more: the pending value is null
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
			y.carry = 0
			y.add(costCollection)
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
			y.carry = 0
			if f := frame(); f != nil && f.explicit && f.mapping {
				if f.key && (!f.colon || !f.valued) {
					y.add(costNull) // the last entry's value is null
				}
			} else {
				y.add(costNull) // possibly a null value
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
			y.carry = 0
			if f := frame(); f != nil && f.explicit && f.mapping {
				if f.key && (!f.colon || !f.valued) {
					y.add(costNull)
				}
				*f = flowFrame{mapping: true, explicit: true}
			} else {
				y.add(costNull)
			}
			continue
		case c == ':' && (sep || !inPiece || !plain || depth > 0 && isFlowIndicator(next)):
			// On a line with quotes, any ":" may be an indicator
			// ("a":1): count it.
			inPiece = false
			y.carry = 0
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
			y.add(costCollection) // a new mapping, or a single-pair one in a flow sequence
			continue
		case (c == '-' || c == '?') && !inPiece && sep:
			lastCol = i
			y.carry = 0
			if c == '?' {
				y.add(costCollection)
				y.add(costNull)
				continue
			}
			dashes++
			if dashes == 1 && pieces == 0 && !flow && colons == 0 {
				dashCol = i
				if plain && y.prevPlain && !y.prevFlow && y.prevDashCol == i {
					continue // same sequence as the previous line
				}
			}
			y.add(costCollection) // a new sequence
			continue
		}
		if !inPiece {
			inPiece = true
			pieces++
			pieceCol = i
			lastCol = -1
			base, perByte := scalarCost(l[i:])
			y.carry = max(y.carry, perByte)
			y.add(base)
			if f := frame(); f != nil {
				if f.colon {
					f.valued = true
				} else {
					f.key = true
				}
			}
		}
		y.cost += y.carry
	}
	if lastCol >= 0 {
		if depth > 0 || overflow > 0 {
			y.add(costNull) // inside a flow collection: be conservative
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

// The costs of the nodes a document's parse builds (the YAML parser's tree,
// the values decoded from it and their validation), in bytes allocated,
// measured (TestParseCostsAreUpperBounds) on the costliest shape of each
// kind: flat lists of 100,000 items, whose slices grow the most. A scalar
// costs its base and, for each byte of it, its per-byte cost; the YAML
// parser tries a plain scalar that begins like a number as a timestamp and
// as numbers first, copying it each time.
const (
	costDecode     = 100 // decoding and validation, per node: a service's struct, a map entry
	costCollection = 215 + costDecode
	costNull       = 274 + costDecode // a service written without a body still gets its struct (about 200 bytes)
	costScalar     = 265 + costDecode // quoted, or plain
	costNumeric    = 365 + costDecode // plain, beginning with a digit, a sign or a dot
	costDate       = 575 + costDecode // plain, beginning with 4 digits and a "-"
	perByteScalar  = 5
	perByteNumeric = 8
	perByteDate    = 20
)

// scalarCost returns the base and per-byte costs of a scalar beginning at
// the start of s.
func scalarCost(s []byte) (base, perByte int64) {
	switch c := s[0]; {
	case c >= '0' && c <= '9':
		if len(s) > 4 && s[4] == '-' && isDigits(s[:4]) {
			return costDate, perByteDate
		}
		return costNumeric, perByteNumeric
	case c == '-' || c == '+' || c == '.':
		return costNumeric, perByteNumeric
	}
	return costScalar, perByteScalar
}

func isDigits(s []byte) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// capped returns problems, followed, when dropped > 0, by one problem that
// says how many more were found.
func capped(problems []FieldError, dropped int) []FieldError {
	if dropped == 0 {
		return problems
	}
	return append(problems, FieldError{Msg: fmt.Sprintf("and %d more problems", dropped)})
}
