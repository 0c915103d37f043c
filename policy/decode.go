package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// YAML short tags the decoder looks at.
const (
	tagNull      = "!!null"
	tagBool      = "!!bool"
	tagStr       = "!!str"
	tagInt       = "!!int"
	tagFloat     = "!!float"
	tagTimestamp = "!!timestamp"
	tagMerge     = "!!merge"
)

// Parse reads a policy document written in YAML or JSON (JSON is read as
// YAML), decodes it into a Document and validates it.
//
// Every problem is reported, not just the first: the error is a
// *ValidationError whose problems name the field path, such as
// "services.billing.retry.attempts: must be 1..10", and errors.Is(err,
// ErrInvalid) holds. Unknown fields, duplicate keys, wrong types and
// durations without a unit ("250" instead of "250ms") are errors. When the
// document cannot be decoded, validation is not attempted.
//
// Parsing runs in bounded memory: a document of more than MaxDocumentSize
// bytes, more than 450,000 YAML nodes, or whose nodes would cost more than
// 150 MB to parse (each kind of node charged what the YAML parser and the
// decoder allocate for it) is refused before it is parsed; a document with
// more than MaxServices services, or whose services resolve to more than
// MaxResolvedRoutes routes, is refused before it is validated, so that
// NewSnapshot of it is bounded too (about 50 MB beyond its own copy). A
// fleet of 20,000 services, each with an endpoint and a subset, fits.
//
// Parse does not keep data. It is safe for concurrent use.
func Parse(data []byte) (*Document, error) {
	doc, zeros, err := decode(data)
	if err != nil {
		return nil, err
	}
	if err := doc.validate(zeros); err != nil {
		return nil, err
	}
	return doc, nil
}

// decode turns data into a Document without validating it. zeros holds
// the paths of the integers written as 0, which the Document cannot tell
// from absent ones.
func decode(data []byte) (doc *Document, zeros map[string]bool, err error) {
	doc = new(Document)
	if zeros, err = decodeInto(data, doc, ""); err != nil {
		return nil, nil, err
	}
	return doc, zeros, nil
}

// decodeInto decodes data into the struct target points to, reporting
// problems under path ("" for a whole document). It returns the paths of
// the integers written as 0.
func decodeInto(data []byte, target any, path string) (map[string]bool, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, invalid(path, "empty document")
	}
	if err := checkSize(data, path); err != nil {
		return nil, err
	}
	root, err := parseYAML(data)
	if err != nil {
		return nil, err
	}
	d := decoder{fieldPath: fieldPath{path: []byte(path)}}
	d.decode(root, reflect.ValueOf(target).Elem())
	if len(d.problems) > 0 {
		return nil, &ValidationError{Problems: capped(d.problems, d.dropped)}
	}
	return d.zeros, nil
}

// parseYAML parses exactly one YAML document and returns its root mapping.
func parseYAML(data []byte) (*yaml.Node, error) {
	if json.Valid(data) {
		data = jsonAsYAML(data)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, invalid("", "empty document")
		}
		return nil, invalid("", "invalid YAML: "+strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, invalid("", "more than one YAML document in the input")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	for root.Kind == yaml.AliasNode && root.Alias != nil {
		root = root.Alias
	}
	if root.Kind != yaml.MappingNode {
		return nil, invalid("", "the document must be a mapping (of version, trust_domain, defaults, services), got "+describe(root))
	}
	return root, nil
}

// jsonAsYAML rewrites the strings of a valid JSON text that YAML would read
// differently: YAML has no "\/" escape nor UTF-16 surrogate pairs
// ("\ud83d\ude00"), and takes U+0085, U+2028 and U+2029 for line breaks.
// Such a string is decoded as encoding/json does and written back with
// ASCII-only escapes, which mean the same in YAML. Everything else, line
// breaks included (so error lines stay right), is kept as it is.
func jsonAsYAML(data []byte) []byte {
	var out []byte // nil until a string needs rewriting
	last := 0      // data[:last] is in out
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		start, plain := i, true
		for i++; data[i] != '"'; i++ {
			if data[i] == '\\' {
				i++
				plain = false
			} else if data[i] >= utf8.RuneSelf {
				plain = false
			}
		}
		if plain {
			continue
		}
		var s string
		if json.Unmarshal(data[start:i+1], &s) != nil {
			continue // cannot happen in valid JSON; leave it to the YAML parser
		}
		out = append(out, data[last:start]...)
		out = append(out, strconv.QuoteToASCII(s)...)
		last = i + 1
	}
	if out == nil {
		return data
	}
	return append(out, data[last:]...)
}

// invalid returns a *ValidationError with one problem.
func invalid(path, msg string) error {
	return &ValidationError{Problems: []FieldError{{Path: path, Msg: msg}}}
}

// decoder is a small reflective decoder from yaml.Node to the document types.
// It is driven by the json struct tags (so the YAML and JSON names are one
// and the same), rejects unknown fields and duplicate keys, and records every
// problem with its path instead of stopping at the first.
//
// It allocates little beyond the values it decodes: the path of the value
// being decoded is kept as bytes and turned into a string only for a
// problem (or a written 0), and the pairs of the mappings being decoded
// share one buffer.
type decoder struct {
	problems []FieldError
	dropped  int                 // problems beyond maxProblems, not kept
	nodes    int                 // nodes visited, aliases followed
	tooLarge bool                // maxNodes was exceeded; decoding has stopped
	merging  map[*yaml.Node]bool // mappings whose merge keys are being expanded
	zeros    map[string]bool     // paths of the integers written as 0

	fieldPath                                  // path of the value being decoded
	pairs     []entry                          // the entries of the mappings being decoded, outermost first
	keys      []string                         // buffer of plain, for its duplicate check
	cells     map[reflect.Type][]reflect.Value // spare addressable values, by type, for map elements
	keyCell   reflect.Value                    // an addressable string, for map keys
}

var (
	durationType = reflect.TypeFor[Duration]()
	stringType   = reflect.TypeFor[string]()
)

// where returns the path of the value being decoded.
func (d *decoder) where() string { return string(d.path) }

// fieldPath is the field path being walked by the decoder or the
// validator, kept as bytes (as join and index write it) and rendered as a
// string only for a problem, so a valid document costs no path strings.
type fieldPath struct{ path []byte }

// push appends a mapping key to the path, as join does, and returns the
// length to pop back to.
func (f *fieldPath) push(key string) int {
	n := len(f.path)
	f.path = appendKey(f.path, key)
	return n
}

// pushIndex appends a list index to the path, as index does.
func (f *fieldPath) pushIndex(i int) int {
	n := len(f.path)
	f.path = appendIndex(f.path, i)
	return n
}

func (f *fieldPath) pop(n int) { f.path = f.path[:n] }

// failAt reports a problem at the path of the value being decoded.
func (d *decoder) failAt(format string, args ...any) {
	if len(d.problems) >= maxProblems {
		d.dropped++
		return
	}
	d.fail(d.where(), format, args...)
}

// failKey reports a problem at key below the value being decoded.
func (d *decoder) failKey(key, format string, args ...any) {
	m := d.push(key)
	d.failAt(format, args...)
	d.pop(m)
}

// appendKey appends a mapping key to a field path, as join does.
func appendKey(path []byte, key string) []byte {
	if !plainKey(key) {
		path = append(path, '[')
		path = strconv.AppendQuote(path, key)
		return append(path, ']')
	}
	if len(path) > 0 {
		path = append(path, '.')
	}
	return append(path, key...)
}

// appendIndex appends a list index to a field path, as index does.
func appendIndex(path []byte, i int) []byte {
	path = append(path, '[')
	path = strconv.AppendInt(path, int64(i), 10)
	return append(path, ']')
}

func (d *decoder) fail(path, format string, args ...any) {
	if len(d.problems) >= maxProblems {
		d.dropped++
		return
	}
	d.problems = append(d.problems, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// visit counts n and resolves aliases. It returns nil when decoding must stop.
func (d *decoder) visit(n *yaml.Node) *yaml.Node {
	for {
		if d.tooLarge {
			return nil
		}
		d.nodes++
		if d.nodes > maxNodes {
			d.tooLarge = true
			d.fail("", "document too large: more than %d YAML nodes once aliases are expanded", maxNodes)
			return nil
		}
		if n.Kind != yaml.AliasNode {
			return n
		}
		if n.Alias == nil {
			return nil // the parser never leaves an alias unresolved; be safe anyway
		}
		n = n.Alias
	}
}

// decode stores n into v (settable), reporting problems under the current
// path. A YAML null leaves v as it is.
func (d *decoder) decode(n *yaml.Node, v reflect.Value) {
	n = d.visit(n)
	if n == nil {
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == tagNull {
		return
	}
	if v.Type() == durationType {
		d.duration(n, v)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem())
	case reflect.Struct:
		d.structure(n, v)
	case reflect.Map:
		d.mapping(n, v)
	case reflect.Slice:
		d.sequence(n, v)
	case reflect.String:
		if s, ok := d.str(n); ok {
			v.SetString(s)
		}
	case reflect.Int, reflect.Int64:
		d.integer(n, v)
	case reflect.Float64:
		d.float(n, v)
	case reflect.Bool:
		d.boolean(n, v)
	default:
		// Only reachable if a field of an unsupported type is added to the
		// document types; the tests decode every field.
		panic(fmt.Sprintf("policy: decoder does not support %s at %s", v.Type(), d.where()))
	}
}

// entry is one key-value pair of a YAML mapping.
type entry struct {
	key   string
	line  int // of the key; 0 for a key merged from another mapping
	value *yaml.Node
}

// smallMapping is the most pairs a mapping (or list) may have for its
// duplicates to be found by comparing each item with those before it,
// rather than with a map or by sorting.
const smallMapping = 16

// plain reports whether the keys of mapping n are distinct strings (valid
// UTF-8) and none is a merge key: then its pairs are n.Content as it is, and
// entries need not be built. It counts no node.
func (d *decoder) plain(n *yaml.Node) bool {
	if len(n.Content)%2 != 0 {
		return false
	}
	keys := slices.Grow(d.keys[:0], len(n.Content)/2)
	for i := 0; i < len(n.Content); i += 2 {
		k := n.Content[i]
		for hops := 0; k.Kind == yaml.AliasNode; hops++ {
			if k.Alias == nil || hops > 100 {
				return false
			}
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode || !utf8.ValidString(k.Value) {
			return false
		}
		switch k.ShortTag() {
		case tagNull, tagMerge:
			return false
		}
		keys = append(keys, k.Value)
	}
	d.keys = keys
	if len(keys) <= smallMapping {
		for i := range keys {
			if slices.Contains(keys[:i], keys[i]) {
				return false
			}
		}
		return true
	}
	slices.Sort(keys)
	for i := 1; i < len(keys); i++ {
		if keys[i] == keys[i-1] {
			return false
		}
	}
	return true
}

// each calls f with every pair of mapping n (see entries), in order.
func (d *decoder) each(n *yaml.Node, f func(key string, value *yaml.Node)) {
	if d.plain(n) {
		for i := 0; i < len(n.Content); i += 2 {
			k := d.visit(n.Content[i])
			if k == nil {
				return
			}
			f(k.Value, n.Content[i+1])
		}
		return
	}
	start := len(d.pairs)
	for _, e := range d.entries(n) {
		f(e.key, e.value)
	}
	d.pairs = d.pairs[:start]
}

// entries returns the pairs of mapping n, merge keys ("<<: *base") expanded
// with the explicit keys winning. A key given twice is reported. The pairs
// are appended to d.pairs and returned as its tail: the caller truncates
// d.pairs back to the length it had once it is done with them.
func (d *decoder) entries(n *yaml.Node) []entry {
	start := len(d.pairs)
	if len(n.Content)%2 != 0 {
		d.failAt("malformed mapping")
		return nil
	}
	seen := make(map[string]int, len(n.Content)/2) // key -> line
	add := func(e entry) {
		seen[e.key] = e.line
		d.pairs = append(d.pairs, e)
	}
	var merges []*yaml.Node
	for i := 0; i < len(n.Content); i += 2 {
		k := d.visit(n.Content[i])
		if k == nil {
			d.pairs = d.pairs[:start]
			return nil
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == tagMerge {
			merges = append(merges, n.Content[i+1])
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() == tagNull {
			d.failAt("a key must be a string, got %s (line %d)", describe(k), k.Line)
			continue
		}
		if !utf8.ValidString(k.Value) {
			d.failAt("a key is not valid UTF-8 (line %d)", k.Line)
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.failKey(k.Value, "duplicate key (first at line %d)", line)
			continue
		}
		add(entry{k.Value, k.Line, n.Content[i+1]})
	}
	// YAML merge keys: earlier sources win over later ones, explicit keys over all.
	if len(merges) == 0 {
		return d.pairs[start:]
	}
	if d.merging[n] {
		d.failKey("<<", "a merge key refers to its own mapping")
		return d.pairs[start:]
	}
	if d.merging == nil {
		d.merging = make(map[*yaml.Node]bool)
	}
	d.merging[n] = true
	defer delete(d.merging, n)
	for _, m := range merges {
		m = d.visit(m)
		if m == nil {
			return d.pairs[start:]
		}
		var sources []*yaml.Node
		switch m.Kind {
		case yaml.MappingNode:
			sources = []*yaml.Node{m}
		case yaml.SequenceNode:
			sources = m.Content
		default:
			d.failKey("<<", "a merge key needs a mapping or a list of mappings, got %s", describe(m))
			continue
		}
		for _, s := range sources {
			s = d.visit(s)
			if s == nil {
				return d.pairs[start:]
			}
			if s.Kind != yaml.MappingNode {
				d.failKey("<<", "a merge key needs a mapping or a list of mappings, got %s", describe(s))
				continue
			}
			end := len(d.pairs)
			merged := slices.Clone(d.entries(s))
			d.pairs = d.pairs[:end]
			for _, e := range merged {
				if _, dup := seen[e.key]; !dup {
					add(entry{e.key, 0, e.value})
				}
			}
		}
	}
	return d.pairs[start:]
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.failAt("expected a mapping, got %s", describe(n))
		return
	}
	fields := fieldsOf(v.Type())
	var lb lbForms // the forms of load_balancer seen, for a struct with Settings
	d.each(n, func(key string, value *yaml.Node) {
		m := d.push(key)
		if idx, ok := fields[key]; ok {
			if !d.loadBalancerSugar(&lb, key, value, v, idx) {
				d.decode(value, v.FieldByIndex(idx))
			}
		} else {
			d.failAt("unknown field")
		}
		d.pop(m)
	})
	if lb.object && (lb.hash || lb.ring) {
		d.failKey("load_balancer", "hash and ring_hash go either in the load_balancer mapping or beside it, not both")
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.failAt("expected a mapping, got %s", describe(n))
		return
	}
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		panic("policy: decoder supports string map keys only")
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(t, len(n.Content)/2))
	}
	// The key and, unless the map holds pointers, the element are decoded
	// into spare values that SetMapIndex copies from.
	key := d.keyCell
	if t.Key() != stringType {
		key = reflect.New(t.Key()).Elem()
	} else if !key.IsValid() {
		key = reflect.New(stringType).Elem()
		d.keyCell = key
	}
	var elem reflect.Value
	if t.Elem().Kind() != reflect.Pointer {
		elem = d.cell(t.Elem())
		defer d.release(elem)
	}
	d.each(n, func(k string, value *yaml.Node) {
		// A present key always makes an entry, even with a null value:
		// "billing:" alone declares the service with every field defaulted.
		if t.Elem().Kind() == reflect.Pointer {
			elem = reflect.New(t.Elem().Elem())
		} else {
			elem.SetZero()
		}
		m := d.push(k)
		d.decode(value, elem)
		d.pop(m)
		key.SetString(k)
		v.SetMapIndex(key, elem)
	})
}

// cell returns an addressable value of type t, zero or not, for release to
// take back.
func (d *decoder) cell(t reflect.Type) reflect.Value {
	if free := d.cells[t]; len(free) > 0 {
		c := free[len(free)-1]
		d.cells[t] = free[:len(free)-1]
		return c
	}
	return reflect.New(t).Elem()
}

func (d *decoder) release(c reflect.Value) {
	if d.cells == nil {
		d.cells = make(map[reflect.Type][]reflect.Value)
	}
	d.cells[c.Type()] = append(d.cells[c.Type()], c)
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.failAt("expected a list, got %s", describe(n))
		return
	}
	// An explicit empty list is kept non-nil: for retry_on it means "none".
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		m := d.pushIndex(i)
		d.decode(item, s.Index(i))
		d.pop(m)
		if d.tooLarge {
			return
		}
	}
	v.Set(s)
}

// str returns the text of a scalar. Numbers, booleans and dates are taken
// as written, so `version: 2026-11-26` and `retry_on: [503]` read as strings.
func (d *decoder) str(n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.failAt("expected a string, got %s", describe(n))
		return "", false
	}
	switch n.ShortTag() {
	case tagStr, tagInt, tagFloat, tagBool, tagTimestamp:
	default:
		d.failAt("expected a string, got %s", describe(n))
		return "", false
	}
	if !utf8.ValidString(n.Value) {
		d.failAt("not valid UTF-8")
		return "", false
	}
	return n.Value, true
}

func (d *decoder) integer(n *yaml.Node, v reflect.Value) {
	var i int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tagInt || n.Decode(&i) != nil {
		d.failAt("expected an integer, got %s", describe(n))
		return
	}
	if v.OverflowInt(i) {
		d.failAt("integer %s out of range", n.Value)
		return
	}
	if i == 0 {
		if d.zeros == nil {
			d.zeros = make(map[string]bool)
		}
		d.zeros[d.where()] = true
	}
	v.SetInt(i)
}

func (d *decoder) float(n *yaml.Node, v reflect.Value) {
	var f float64
	tag := n.ShortTag()
	if n.Kind != yaml.ScalarNode || (tag != tagInt && tag != tagFloat) || n.Decode(&f) != nil {
		d.failAt("expected a number, got %s", describe(n))
		return
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		d.failAt("expected a finite number, got %s", n.Value)
		return
	}
	if f == 0 {
		f = 0 // -0 reads as 0, so the document hashes the same once re-encoded
	}
	v.SetFloat(f)
}

func (d *decoder) boolean(n *yaml.Node, v reflect.Value) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != tagBool || n.Decode(&b) != nil {
		d.failAt("expected true or false, got %s", describe(n))
		return
	}
	v.SetBool(b)
}

func (d *decoder) duration(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		d.failAt("expected a duration such as \"250ms\", got %s", describe(n))
		return
	}
	switch n.ShortTag() {
	case tagInt, tagFloat:
		d.failAt("invalid duration %s: a number needs a unit; write e.g. \"250ms\"", n.Value)
		return
	case tagStr:
	default:
		d.failAt("expected a duration such as \"250ms\", got %s", describe(n))
		return
	}
	dur, err := parseDuration(n.Value)
	if err != nil {
		d.failAt("%s", err)
		return
	}
	v.SetInt(int64(dur))
}

// parseDuration parses a Go duration string. A bare number, even 0, is
// refused: a unit is required.
func parseDuration(s string) (time.Duration, error) {
	dur, err := time.ParseDuration(s)
	if err != nil {
		if isNumber(s) {
			return 0, fmt.Errorf("invalid duration %q: a number needs a unit; write e.g. \"250ms\"", s)
		}
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	if s == "0" || s == "+0" || s == "-0" {
		return 0, fmt.Errorf("invalid duration %q: a number needs a unit; write e.g. \"0s\"", s)
	}
	return dur, nil
}

// isNumber reports whether s looks like a plain decimal number.
func isNumber(s string) bool {
	s = strings.TrimLeft(s, "+-")
	digits := 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
		default:
			return false
		}
	}
	return digits > 0
}

// describe names what node n is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case tagNull:
			return "null"
		case tagStr, tagInt, tagFloat, tagBool, tagTimestamp:
			return fmt.Sprintf("%q", truncate(n.Value, 40))
		default:
			return fmt.Sprintf("%s %q", tag, truncate(n.Value, 40))
		}
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return "nothing"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// fieldsOf maps the json names of t's fields to their index paths, with
// untagged embedded structs inline as in encoding/json. Cached per type.
func fieldsOf(t reflect.Type) map[string][]int {
	if f, ok := fieldCache.Load(t); ok {
		return f.(map[string][]int)
	}
	fields := make(map[string][]int)
	collectFields(t, nil, fields)
	fieldCache.Store(t, fields)
	return fields
}

var fieldCache sync.Map // reflect.Type -> map[string][]int

func collectFields(t reflect.Type, prefix []int, into map[string][]int) {
	for i := range t.NumField() {
		f := t.Field(i)
		idx := append(append([]int(nil), prefix...), i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
			collectFields(f.Type, idx, into)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if _, dup := into[tag]; dup {
			panic(fmt.Sprintf("policy: field name %q used twice in %s", tag, t))
		}
		into[tag] = idx
	}
}
