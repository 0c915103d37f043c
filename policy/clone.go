package policy

import (
	"maps"
	"reflect"
)

// Clone returns a deep copy of d, sharing no memory with it. Clone of nil
// is nil.
func (d *Document) Clone() *Document {
	return deepCopy(d)
}

// deepCopy returns a copy of v that shares no memory with it (but for
// strings, which are immutable). It handles the plain data of the document
// types: structs, pointers, maps, slices and scalars. nil maps, slices and
// pointers stay nil, empty ones stay empty.
func deepCopy[T any](v T) T {
	var out T
	copyValue(reflect.ValueOf(&out).Elem(), reflect.ValueOf(&v).Elem())
	return out
}

func copyValue(dst, src reflect.Value) {
	switch src.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		p := reflect.New(src.Type().Elem())
		copyValue(p.Elem(), src.Elem())
		dst.Set(p)
	case reflect.Struct:
		for i := range src.NumField() {
			if dst.Field(i).CanSet() {
				copyValue(dst.Field(i), src.Field(i))
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
			dst.Set(reflect.ValueOf(maps.Clone(m)))
			return
		case map[string]map[string]string:
			c := make(map[string]map[string]string, len(m))
			for k, sel := range m {
				c[k] = maps.Clone(sel)
			}
			dst.Set(reflect.ValueOf(c))
			return
		}
		m := reflect.MakeMapWithSize(src.Type(), src.Len())
		k := reflect.New(src.Type().Key()).Elem()
		e := reflect.New(src.Type().Elem()).Elem()
		c := reflect.New(src.Type().Elem()).Elem()
		for it := src.MapRange(); it.Next(); {
			k.SetIterKey(it)
			e.SetIterValue(it)
			c.SetZero()
			copyValue(c, e)
			m.SetMapIndex(k, c) // keys, comparable, are copied as they are: the document's are strings
		}
		dst.Set(m)
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		s := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			copyValue(s.Index(i), src.Index(i))
		}
		dst.Set(s)
	default:
		dst.Set(src)
	}
}
