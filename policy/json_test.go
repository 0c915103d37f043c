package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestEffectiveJSONHasEveryField: Effective has no tags of its own (it is
// marshalled through effectiveJSON), so every field of Effective must have
// its counterpart there, durations as Duration, and MarshalJSON must carry
// each one. A field added to Effective alone fails here.
func TestEffectiveJSONHasEveryField(t *testing.T) {
	et, jt := reflect.TypeFor[Effective](), reflect.TypeFor[effectiveJSON]()
	durationType := reflect.TypeFor[time.Duration]()
	for i := range et.NumField() {
		ef := et.Field(i)
		jf, ok := jt.FieldByName(ef.Name)
		if !ok {
			t.Errorf("Effective.%s has no JSON form: add it to effectiveJSON and Effective.MarshalJSON", ef.Name)
			continue
		}
		want := ef.Type
		if want == durationType {
			want = reflect.TypeFor[Duration]() // "250ms", not nanoseconds
		}
		if jf.Type != want {
			t.Errorf("effectiveJSON.%s is %v, want %v", jf.Name, jf.Type, want)
		}
		if name := jsonName(jf); name == "" || name == "-" {
			t.Errorf("effectiveJSON.%s has no JSON name", jf.Name)
		}
	}
	if jt.NumField() != et.NumField() {
		t.Errorf("effectiveJSON has %d fields, Effective %d", jt.NumField(), et.NumField())
	}

	// Every field set: each comes out under its name with its value.
	var e Effective
	ev := reflect.ValueOf(&e).Elem()
	for i := range ev.NumField() {
		fillNonZero(t, ev.Field(i), et.Field(i).Name)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for i := range et.NumField() {
		ef := et.Field(i)
		jf, ok := jt.FieldByName(ef.Name)
		if !ok {
			continue
		}
		v := ev.Field(i).Interface()
		if d, ok := v.(time.Duration); ok {
			v = Duration(d)
		}
		want, _ := json.Marshal(v)
		if raw, ok := got[jsonName(jf)]; !ok || string(raw) != string(want) {
			t.Errorf("Effective.MarshalJSON: %q = %s, want %s (Effective.%s)", jsonName(jf), raw, want, ef.Name)
		}
	}
	if len(got) != jt.NumField() {
		t.Errorf("MarshalJSON wrote %d keys, want %d: %s", len(got), jt.NumField(), b)
	}
}

// TestConfigTypesMarshalByTags: every struct that /config serves (the
// snapshot's document and resolved services) names each exported field in
// JSON, and has no time.Duration field (which encoding/json would write as
// nanoseconds): durations are Duration, written "250ms". Effective is
// checked by TestEffectiveJSONHasEveryField.
func TestConfigTypesMarshalByTags(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[Snapshot]().PkgPath() || seen[typ] {
			return
		}
		seen[typ] = true
		if typ == reflect.TypeFor[Effective]() {
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			where := path + "." + f.Name
			if f.Type == reflect.TypeFor[time.Duration]() {
				t.Errorf("%s is a time.Duration: JSON would write nanoseconds; use Duration", where)
			}
			if !f.Anonymous && jsonName(f) == "" {
				t.Errorf("%s has no json tag", where)
			}
			walk(f.Type, where)
		}
	}
	walk(reflect.TypeFor[Snapshot](), "Snapshot")
	if !seen[reflect.TypeFor[ResolvedService]()] || !seen[reflect.TypeFor[Effective]()] {
		t.Fatal("the walk missed the resolved services")
	}
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// fillNonZero sets v to a value that is not its zero value.
func fillNonZero(t *testing.T, v reflect.Value, name string) {
	switch v.Kind() {
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(1500 * time.Microsecond)) // "1.5ms" as a duration
	case reflect.Float64:
		v.SetFloat(0.25)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.String:
		v.SetString("x-" + strings.ToLower(name))
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fillNonZero(t, s.Index(0), name)
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fillNonZero(t, p.Elem(), name)
		v.Set(p)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillNonZero(t, v.Field(i), name+"."+v.Type().Field(i).Name)
			}
		}
	default:
		t.Fatalf("Effective.%s: no filler for kind %v; extend fillNonZero", name, v.Kind())
	}
}
