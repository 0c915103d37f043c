package policy

import (
	"maps"
	"reflect"
	"slices"
)

// Clone returns a deep copy of d, sharing no memory with it. Clone of nil
// is nil.
func (d *Document) Clone() *Document {
	return deepCopy(d)
}

// readOnlyCopy returns a deep copy of d for a snapshot, which nobody
// modifies: it shares no memory with d, but its string maps of equal
// contents (the labels and subset selectors that repeat across a fleet,
// such as {version: v1}) are one map, held once.
func (d *Document) readOnlyCopy() *Document {
	var out *Document
	c := copier{interned: map[string]map[string]string{}}
	c.copyValue(reflect.ValueOf(&out).Elem(), reflect.ValueOf(&d).Elem())
	return out
}

// deepCopy returns a copy of v that shares no memory with it (but for
// strings, which are immutable). It handles the plain data of the document
// types: structs, pointers, maps, slices and scalars. nil maps, slices and
// pointers stay nil, empty ones stay empty.
func deepCopy[T any](v T) T {
	var out T
	var c copier
	c.copyValue(reflect.ValueOf(&out).Elem(), reflect.ValueOf(&v).Elem())
	return out
}

// copier copies document values; with interned set, equal string maps of
// the copy are one map.
type copier struct {
	interned map[string]map[string]string
	key      []byte
}

// stringMap returns a copy of m, the one made before for equal contents
// when interning.
func (c *copier) stringMap(m map[string]string) map[string]string {
	if c.interned == nil || len(m) > 8 {
		return maps.Clone(m)
	}
	c.key = c.key[:0]
	for _, k := range slices.Sorted(maps.Keys(m)) {
		c.key = append(c.key, k...)
		c.key = append(c.key, 0)
		c.key = append(c.key, m[k]...)
		c.key = append(c.key, 0)
	}
	if got, ok := c.interned[string(c.key)]; ok {
		return got
	}
	cp := maps.Clone(m)
	c.interned[string(c.key)] = cp
	return cp
}

func (c *copier) copyValue(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		p := reflect.New(src.Type().Elem())
		c.copyValue(p.Elem(), src.Elem())
		dst.Set(p)
	case reflect.Struct:
		for i := range src.NumField() {
			if dst.Field(i).CanSet() {
				c.copyValue(dst.Field(i), src.Field(i))
			}
		}
	case reflect.Map:
		if src.IsNil() {
			return
		}
		// The string maps of the document, most of its maps, are copied
		// whole; strings are immutable and need no copy.
		switch m := src.Interface().(type) {
		case map[string]string:
			dst.Set(reflect.ValueOf(c.stringMap(m)))
			return
		case map[string]map[string]string:
			out := make(map[string]map[string]string, len(m))
			for k, sel := range m {
				out[k] = c.stringMap(sel)
			}
			dst.Set(reflect.ValueOf(out))
			return
		}
		m := reflect.MakeMapWithSize(src.Type(), src.Len())
		k := reflect.New(src.Type().Key()).Elem()
		e := reflect.New(src.Type().Elem()).Elem()
		v := reflect.New(src.Type().Elem()).Elem()
		for it := src.MapRange(); it.Next(); {
			k.SetIterKey(it)
			e.SetIterValue(it)
			v.SetZero()
			c.copyValue(v, e)
			m.SetMapIndex(k, v) // keys, comparable, are copied as they are: the document's are strings
		}
		dst.Set(m)
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			c.copyValue(s.Index(i), src.Index(i))
		}
		dst.Set(s)
	default:
		dst.Set(src)
	}
}
