package identity

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseIDValid(t *testing.T) {
	tests := []struct {
		in       string
		td, path string
		service  string // "" when Service reports false
	}{
		{in: "spiffe://mesh.local", td: "mesh.local"},
		{in: "spiffe://mesh.local/svc/billing", td: "mesh.local", path: "/svc/billing", service: "billing"},
		{in: "spiffe://a_b-c.9/svc/Bill-ing_2.v1", td: "a_b-c.9", path: "/svc/Bill-ing_2.v1", service: "Bill-ing_2.v1"},
		{in: "spiffe://11111111-2222.consul/ns/default/dc/dc1/svc/web", td: "11111111-2222.consul", path: "/ns/default/dc/dc1/svc/web", service: "web"},
		{in: "spiffe://td/ap/part/ns/default/dc/dc1/svc/web", td: "td", path: "/ap/part/ns/default/dc/dc1/svc/web", service: "web"},
		{in: "spiffe://td/svc/billing/extra", td: "td", path: "/svc/billing/extra"},
		{in: "spiffe://td/ns/default/svc/web", td: "td", path: "/ns/default/svc/web"},
		{in: "spiffe://td/ns/default/dc/dc1/svc/web/x", td: "td", path: "/ns/default/dc/dc1/svc/web/x"},
		{in: "spiffe://td/workload/svc", td: "td", path: "/workload/svc"},
		{in: "spiffe://td/...", td: "td", path: "/..."},
		{in: "spiffe://td/svc/.hidden", td: "td", path: "/svc/.hidden", service: ".hidden"},
		{in: "spiffe://" + strings.Repeat("a", 255) + "/x", td: strings.Repeat("a", 255), path: "/x"},
		{in: "spiffe://td/" + strings.Repeat("p", MaxIDLength-len("spiffe://td/")), td: "td", path: "/" + strings.Repeat("p", MaxIDLength-len("spiffe://td/"))},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			id, err := ParseID(tt.in)
			if err != nil {
				t.Fatalf("ParseID: %v", err)
			}
			if id.TrustDomain() != tt.td || id.Path() != tt.path {
				t.Errorf("got td %q path %q, want %q %q", id.TrustDomain(), id.Path(), tt.td, tt.path)
			}
			if id.String() != tt.in {
				t.Errorf("String() = %q, want %q", id.String(), tt.in)
			}
			if id.IsZero() {
				t.Error("IsZero() = true")
			}
			svc, ok := id.Service()
			if ok != (tt.service != "") || svc != tt.service {
				t.Errorf("Service() = %q, %v; want %q", svc, ok, tt.service)
			}
			u, err := url.Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if fromURL, err := idFromURL(u); err != nil || fromURL != id {
				t.Errorf("idFromURL = %v, %v; want %v", fromURL, err, id)
			}
		})
	}
}

func TestParseIDInvalid(t *testing.T) {
	tests := []struct {
		in      string
		problem string
	}{
		{"", "empty"},
		{"http://mesh.local/svc/a", `scheme must be "spiffe://"`},
		{"spiffe:mesh.local/svc/a", `scheme must be "spiffe://"`},
		{"mesh.local/svc/a", `scheme must be "spiffe://"`},
		{"SPIFFE://mesh.local/svc/a", `scheme must be lower-case "spiffe"`},
		{"spiffe://", "trust domain is missing"},
		{"spiffe:///svc/a", "trust domain is missing"},
		{"spiffe://Mesh.local/svc/a", `trust domain "Mesh.local": character 'M' is not allowed`},
		{"spiffe://mesh local/svc/a", `character ' ' is not allowed`},
		{"spiffe://mesh.local:8080/svc/a", "port is not allowed"},
		{"spiffe://user@mesh.local/svc/a", "userinfo is not allowed"},
		{"spiffe://mesh.local/svc/a?x=1", "query is not allowed"},
		{"spiffe://mesh.local/svc/a#frag", "fragment is not allowed"},
		{"spiffe://mesh.local?x", "query is not allowed"},
		{"spiffe://mesh.local/", "path has a trailing slash"},
		{"spiffe://mesh.local/svc/a/", "path has a trailing slash"},
		{"spiffe://mesh.local//svc", "path has an empty segment"},
		{"spiffe://mesh.local/svc/..", `path segment "..": dot segments are not allowed`},
		{"spiffe://mesh.local/./svc", `path segment ".": dot segments are not allowed`},
		{"spiffe://mesh.local/svc/a%41", `path segment "a%41": percent-encoding is not allowed`},
		{"spiffe://mesh.local/svc/a b", `character ' ' is not allowed`},
		{"spiffe://mesh.local/svc/é", `is not allowed`},
		{"spiffe://" + strings.Repeat("a", 256), "trust domain is longer than 255 bytes"},
		{"spiffe://td/" + strings.Repeat("p", MaxIDLength), "longer than 2048 bytes"},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			id, err := ParseID(tt.in)
			if err == nil {
				t.Fatalf("ParseID = %v, want an error", id)
			}
			if !errors.Is(err, ErrInvalidID) {
				t.Errorf("%v does not match ErrInvalidID", err)
			}
			if !strings.HasPrefix(err.Error(), "identity: spiffe id ") || !strings.Contains(err.Error(), tt.problem) {
				t.Errorf("error %q does not name %q", err, tt.problem)
			}
			if !id.IsZero() {
				t.Errorf("id = %v, want the zero ID", id)
			}
		})
	}
}

func TestParseIDErrorMessage(t *testing.T) {
	_, err := ParseID("spiffe://mesh.local/svc/..")
	want := `identity: spiffe id "spiffe://mesh.local/svc/..": path segment "..": dot segments are not allowed`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

func TestIDFromURLRejects(t *testing.T) {
	tests := []struct {
		in      string
		problem string
	}{
		{"https://mesh.local/svc/a", "scheme"},
		{"spiffe:opaque", "scheme"},
		{"spiffe://u:p@mesh.local/svc/a", "userinfo"},
		{"spiffe://mesh.local/svc/a?", "query"},
		{"spiffe://mesh.local/svc/a#f", "fragment"},
		// An empty fragment ("...#") leaves no trace in a url.URL, so a SAN
		// with one reads as the ID without it, as in go-spiffe.
		{"spiffe://mesh.local/svc/%61", "percent-encoding"},
		{"spiffe://mesh.local/svc/a%2Fb", "percent-encoding"},
		{"spiffe://mesh.local:1/svc/a", "port"},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.in)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", tt.in, err)
		}
		if id, err := idFromURL(u); err == nil || !strings.Contains(err.Error(), tt.problem) {
			t.Errorf("idFromURL(%q) = %v, %v; want an error about %s", tt.in, id, err, tt.problem)
		}
	}
	if _, err := idFromURL(nil); err == nil {
		t.Error("idFromURL(nil) = nil error")
	}
}

func TestNewServiceID(t *testing.T) {
	tests := []struct {
		td, svc string
		want    string
		wantErr string
	}{
		{td: "mesh.local", svc: "billing", want: "spiffe://mesh.local/svc/billing"},
		{td: "Mesh", svc: "billing", wantErr: "character 'M'"},
		{td: "", svc: "billing", wantErr: "trust domain is missing"},
		{td: "mesh.local", svc: "", wantErr: "empty segment"},
		{td: "mesh.local", svc: "a/b", wantErr: `character '/'`},
		{td: "mesh.local", svc: "..", wantErr: "dot segments"},
	}
	for _, tt := range tests {
		id, err := NewServiceID(tt.td, tt.svc)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidID) {
				t.Errorf("NewServiceID(%q, %q) = %v, %v; want error %q", tt.td, tt.svc, id, err, tt.wantErr)
			}
			continue
		}
		if err != nil || id.String() != tt.want {
			t.Errorf("NewServiceID(%q, %q) = %v, %v; want %s", tt.td, tt.svc, id, err, tt.want)
		}
		if svc, ok := id.Service(); !ok || svc != tt.svc {
			t.Errorf("Service() = %q, %v", svc, ok)
		}
	}
}

func TestConsulServiceID(t *testing.T) {
	id, err := ConsulServiceID("abc.consul", "default", "dc1", "web")
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://abc.consul/ns/default/dc/dc1/svc/web"; id.String() != want {
		t.Errorf("String() = %q, want %q", id, want)
	}
	if id != MustParseID(id.String()) {
		t.Error("ConsulServiceID differs from ParseID of its string")
	}
	if svc, ok := id.Service(); !ok || svc != "web" {
		t.Errorf("Service() = %q, %v", svc, ok)
	}
	for _, bad := range [][4]string{{"abc.consul", "", "dc1", "web"}, {"abc.consul", "default", "d c", "web"}, {"abc.consul", "default", "dc1", "."}} {
		if _, err := ConsulServiceID(bad[0], bad[1], bad[2], bad[3]); err == nil {
			t.Errorf("ConsulServiceID%q = nil error", bad)
		}
	}
}

func TestZeroID(t *testing.T) {
	var id ID
	if !id.IsZero() || id.String() != "" || id.TrustDomain() != "" || id.Path() != "" || id.MemberOf("") {
		t.Errorf("zero ID: %#v", id)
	}
	if _, ok := id.Service(); ok {
		t.Error("zero ID names a service")
	}
}

func TestIDComparableAndText(t *testing.T) {
	a := MustParseID("spiffe://mesh.local/svc/a")
	b, _ := NewServiceID("mesh.local", "a")
	if a != b {
		t.Error("equal IDs compare unequal")
	}
	m := map[ID]int{a: 1}
	if m[b] != 1 {
		t.Error("ID does not work as a map key")
	}
	if !a.MemberOf("mesh.local") || a.MemberOf("other") {
		t.Error("MemberOf wrong")
	}
	type doc struct {
		ID   ID `json:"id"`
		Zero ID `json:"zero"`
	}
	data, err := json.Marshal(doc{ID: a})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"spiffe://mesh.local/svc/a","zero":""}`; string(data) != want {
		t.Errorf("json = %s, want %s", data, want)
	}
	var back doc
	if err := json.Unmarshal(data, &back); err != nil || back.ID != a || !back.Zero.IsZero() {
		t.Errorf("round trip = %+v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"id":"spiffe://X"}`), &back); !errors.Is(err, ErrInvalidID) {
		t.Errorf("bad id decoded with %v", err)
	}
}

func TestLongInputShortenedInError(t *testing.T) {
	_, err := ParseID(strings.Repeat("x", 5000))
	if err == nil || len(err.Error()) > 300 {
		t.Errorf("error for a 5000-byte input: %d bytes", len(err.Error()))
	}
}

func TestServiceDoesNotAllocate(t *testing.T) {
	id := MustParseID("spiffe://td/ns/default/dc/dc1/svc/web")
	if n := testing.AllocsPerRun(100, func() { _, _ = id.Service() }); n != 0 {
		t.Errorf("Service allocates %v times", n)
	}
	u, _ := url.Parse(id.String())
	if n := testing.AllocsPerRun(100, func() { _, _ = idFromURL(u) }); n != 0 {
		t.Errorf("idFromURL allocates %v times", n)
	}
}
