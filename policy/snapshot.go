package policy

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// NewSnapshot validates doc, resolves every service and hashes the
// document. source describes where doc came from ("file:/abs/path",
// "inline", ...).
//
// The snapshot holds a deep copy of doc: the caller keeps doc and may change
// it afterwards without affecting the snapshot. (Within the copy, string
// maps of equal contents, such as labels that repeat, are one map: a
// snapshot is read-only.) An invalid doc gives a
// *ValidationError.
func NewSnapshot(doc *Document, source string) (*Snapshot, error) {
	if err := doc.Validate(); err != nil {
		return nil, err
	}
	return snapshotOwning(doc.readOnlyCopy(), source)
}

// snapshotOwning is NewSnapshot of a valid doc that the snapshot may keep as
// it is: a private copy that no one changes, such as a static source's,
// which its snapshots then share rather than copy again.
func snapshotOwning(doc *Document, source string) (*Snapshot, error) {
	hash, err := Hash(doc)
	if err != nil {
		return nil, err
	}
	return &Snapshot{
		Doc:      doc,
		Version:  cmp.Or(doc.Version, hash),
		Hash:     hash,
		Source:   source,
		Loaded:   time.Now(),
		Services: resolve(doc),
	}, nil
}

// Hash returns the content hash of doc: "sha256:" and the first 16 hex
// digits of the SHA-256 of its canonical JSON (encoding/json, map keys
// sorted). Documents that decode to the same values have the same hash,
// whether they were written in YAML or JSON, with comments or without.
//
// The JSON is streamed into the hash as it is written, byte for byte what
// json.Marshal writes, so hashing a large document allocates little.
func Hash(doc *Document) (string, error) {
	h := sha256.New()
	if err := writeJSON(h, doc); err != nil {
		return "", fmt.Errorf("policy: hashing the document: %w", err)
	}
	var sum [sha256.Size]byte
	return "sha256:" + hex.EncodeToString(h.Sum(sum[:0])[:8]), nil
}

// writeJSON writes json.Marshal(v) to w without building it whole. Values
// of the kinds the document types use are written directly; anything else
// (a type with its own MarshalJSON, a float, a string that needs escaping)
// is written by json.Marshal.
func writeJSON(w io.Writer, v any) error {
	var e jsonWriter
	bp := jsonBuffers.Get().(*[]byte)
	defer func() {
		*bp = e.buf[:0]
		if cap(*bp) <= 64<<10 {
			jsonBuffers.Put(bp)
		}
	}()
	e = jsonWriter{w: w, buf: (*bp)[:0]}
	if err := e.value(reflect.ValueOf(v), 0); err != nil {
		if !errors.Is(err, errTooDeep) {
			return err
		}
		// A cycle, or nesting encoding/json refuses: let it say which.
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	return e.flush()
}

var errTooDeep = errors.New("too deep")

// jsonBuffers holds the buffers of writeJSON, 8 KiB to start with.
var jsonBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 8<<10)
	return &b
}}

// jsonWriter is the state of writeJSON.
type jsonWriter struct {
	w    io.Writer
	buf  []byte        // written but not flushed
	keys [][]string    // sorted map keys, by depth
	key  reflect.Value // an addressable string, for map keys
	err  error         // of w

	// blocks, when not nil, holds the JSON of service blocks by pointer:
	// a block it holds is copied from it, one it lacks is written and
	// added (see hashFrom).
	blocks    map[*Service][]byte
	recording int // blocks being recorded (into blocks or a hashMemo): buf is not flushed

	// resume, when not nil, writes the services as hashFrom does.
	resume *resumeRun
}

func (e *jsonWriter) flush() error {
	if e.err == nil && len(e.buf) > 0 {
		_, e.err = e.w.Write(e.buf)
	}
	e.buf = e.buf[:0]
	return e.err
}

// marshal writes v as encoding/json does, which looks at the methods of *T
// too when v is addressable.
func (e *jsonWriter) marshal(v reflect.Value) error {
	if v.CanAddr() {
		v = v.Addr()
	}
	data, err := json.Marshal(v.Interface())
	if err != nil {
		return err
	}
	e.buf = append(e.buf, data...)
	return nil
}

var (
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// implements reports whether T or *T implements the interface type i.
func implements(t, i reflect.Type) bool {
	return t.Implements(i) || t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(i)
}

func (e *jsonWriter) value(v reflect.Value, depth int) error {
	if depth > 1000 {
		return errTooDeep
	}
	if len(e.buf) >= 4<<10 && e.recording == 0 {
		if err := e.flush(); err != nil {
			return err
		}
	}
	t := v.Type()
	if e.blocks != nil && t == servicePtrType && !v.IsNil() {
		return e.block(v, depth)
	}
	if t == durationType {
		e.buf = append(e.buf, '"')
		e.buf = append(e.buf, time.Duration(v.Int()).String()...)
		e.buf = append(e.buf, '"')
		return nil
	}
	if implements(t, marshalerType) || implements(t, textMarshalerType) {
		if t.Kind() == reflect.Pointer && v.IsNil() {
			e.buf = append(e.buf, "null"...)
			return nil
		}
		return e.marshal(v)
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			e.buf = append(e.buf, "null"...)
			return nil
		}
		return e.value(v.Elem(), depth+1)
	case reflect.Struct:
		fields, ok := jsonFieldsOf(t)
		if !ok {
			return e.marshal(v)
		}
		e.buf = append(e.buf, '{')
		first := true
		for _, f := range fields {
			fv := v.FieldByIndex(f.index)
			if f.omitEmpty && isEmptyJSON(fv) {
				continue
			}
			if !first {
				e.buf = append(e.buf, ',')
			}
			first = false
			e.buf = append(e.buf, f.name...)
			if err := e.value(fv, depth+1); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, '}')
		return nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return e.marshal(v)
		}
		if v.IsNil() {
			e.buf = append(e.buf, "null"...)
			return nil
		}
		if e.resume != nil && t == servicesType {
			return e.resumeServices(v.Interface().(map[string]*Service), depth)
		}
		for len(e.keys) <= depth {
			e.keys = append(e.keys, nil)
		}
		keys := slices.Grow(e.keys[depth][:0], v.Len())
		key := e.key // used between recursive calls only
		if t.Key() != stringType {
			key = reflect.New(t.Key()).Elem()
		} else if !key.IsValid() {
			key = reflect.New(stringType).Elem()
			e.key = key
		}
		for it := v.MapRange(); it.Next(); {
			key.SetIterKey(it)
			keys = append(keys, key.String())
		}
		slices.Sort(keys)
		e.keys[depth] = keys
		e.buf = append(e.buf, '{')
		m, labels := v.Interface().(map[string]string) // MapIndex would copy each string
		for i, k := range keys {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			e.str(k)
			e.buf = append(e.buf, ':')
			if labels {
				e.str(m[k])
				continue
			}
			key.SetString(k)
			if err := e.value(v.MapIndex(key), depth+1); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, '}')
		return nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return e.marshal(v) // base64
		}
		if v.IsNil() {
			e.buf = append(e.buf, "null"...)
			return nil
		}
		e.buf = append(e.buf, '[')
		for i := range v.Len() {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			if err := e.value(v.Index(i), depth+1); err != nil {
				return err
			}
		}
		e.buf = append(e.buf, ']')
		return nil
	case reflect.String:
		e.str(v.String())
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		e.buf = strconv.AppendInt(e.buf, v.Int(), 10)
		return nil
	case reflect.Bool:
		e.buf = strconv.AppendBool(e.buf, v.Bool())
		return nil
	}
	return e.marshal(v) // floats, unsigned integers, interfaces, arrays...
}

var (
	servicePtrType = reflect.TypeFor[*Service]()
	servicesType   = reflect.TypeFor[map[string]*Service]()
)

// block writes the service block v points to from e.blocks, or writes it
// and adds its JSON to e.blocks.
func (e *jsonWriter) block(v reflect.Value, depth int) error {
	p := v.Interface().(*Service)
	if data, ok := e.blocks[p]; ok {
		e.buf = append(e.buf, data...)
		return nil
	}
	start := len(e.buf)
	e.recording++
	err := e.value(v.Elem(), depth+1)
	e.recording--
	if err != nil {
		return err
	}
	e.blocks[p] = bytes.Clone(e.buf[start:])
	return nil
}

// str writes s as a JSON string, escaped as encoding/json escapes it (HTML
// characters included).
func (e *jsonWriter) str(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			data, _ := json.Marshal(s) // cannot fail for a string
			e.buf = append(e.buf, data...)
			return
		}
	}
	e.buf = append(e.buf, '"')
	e.buf = append(e.buf, s...)
	e.buf = append(e.buf, '"')
}

// jsonField is a field of a struct as encoding/json writes it.
type jsonField struct {
	name      string // `"name":`
	index     []int
	omitEmpty bool
}

var jsonFieldCache sync.Map // reflect.Type -> []jsonField, or nil when writeJSON leaves t to encoding/json

// jsonFieldsOf returns the fields encoding/json writes for struct type t, in
// its order, or false when t uses something writeJSON leaves to
// encoding/json (options other than omitempty, embedded pointers, fields
// named twice...).
func jsonFieldsOf(t reflect.Type) ([]jsonField, bool) {
	if f, ok := jsonFieldCache.Load(t); ok {
		fields, _ := f.([]jsonField)
		return fields, fields != nil
	}
	var fields []jsonField
	ok := collectJSONFields(t, nil, &fields)
	names := make(map[string]bool, len(fields))
	for _, f := range fields {
		if names[f.name] {
			ok = false
		}
		names[f.name] = true
	}
	if !ok {
		fields = nil
	}
	jsonFieldCache.Store(t, fields)
	return fields, ok
}

func collectJSONFields(t reflect.Type, prefix []int, into *[]jsonField) bool {
	for i := range t.NumField() {
		f := t.Field(i)
		idx := append(append([]int(nil), prefix...), i)
		tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" && opts == "" {
			continue
		}
		if opts != "" && opts != "omitempty" {
			return false
		}
		if f.Anonymous && tag == "" {
			if f.Type.Kind() != reflect.Struct {
				if f.Type.Kind() == reflect.Pointer || f.IsExported() {
					return false
				}
				continue
			}
			if !collectJSONFields(f.Type, idx, into) {
				return false
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		name := cmp.Or(tag, f.Name)
		if !plainKey(name) {
			return false
		}
		*into = append(*into, jsonField{name: `"` + name + `":`, index: idx, omitEmpty: opts == "omitempty"})
	}
	return true
}

// isEmptyJSON reports whether omitempty leaves v out, as encoding/json
// decides it.
func isEmptyJSON(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64,
		reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

// Service returns the resolved policy of the named service, or nil when the
// snapshot has no such service. s may be nil.
func (s *Snapshot) Service(name string) *ResolvedService {
	if s == nil {
		return nil
	}
	return s.Services[name]
}
