package mesh

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

const adminHTMLPolicy = `
version: v7
services:
  billing:
    endpoints: [{address: 127.0.0.1:9001, labels: {version: v1}}]
    subsets: {v1: {version: v1}}
    circuit_breaker: {consecutive_failures: 5}
    concurrency: {max: 8}
    routes: [{name: all, split: [{subset: v1, weight: 1}]}]
`

// browserAccept is what Chromium sends for a page.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"

func adminGet(t *testing.T, h http.Handler, path, accept string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestAdminNegotiation: the index is HTML for a browser and JSON for a
// tool or on request; the other paths stay JSON unless ?format=html.
func TestAdminNegotiation(t *testing.T) {
	h := newTestMesh(t, adminHTMLPolicy).AdminHandler()
	tests := []struct {
		path, accept string
		wantHTML     bool
	}{
		{"/", "", false},
		{"/", "*/*", false},
		{"/", "application/json", false},
		{"/", browserAccept, true},
		{"/?format=json", browserAccept, false},
		{"/?format=html", "", true},
		{"/", "application/json;q=0.5, text/html", true},
		{"/", "text/html;q=0.5, application/json", false},
		{"/", "text/html, application/json", false}, // a tie goes to JSON
		{"/", "TEXT/HTML", true},
		{"/breakers", browserAccept, false},
		{"/breakers?format=html", "", true},
		{"/config?format=html", "", true},
		{"/endpoints?format=html", "", true},
		{"/protections?format=html", "", true},
		{"/certs?format=html", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.path+" "+tc.accept, func(t *testing.T) {
			rec := adminGet(t, h, tc.path, tc.accept)
			ct := rec.Header().Get("Content-Type")
			if rec.Code != 200 {
				t.Fatalf("code %d: %s", rec.Code, rec.Body)
			}
			if tc.path == "/" && rec.Header().Get("Vary") != "Accept" {
				t.Fatalf("Vary %q", rec.Header().Get("Vary"))
			}
			if got := strings.HasPrefix(ct, "text/html"); got != tc.wantHTML {
				t.Fatalf("content type %q, want html %v", ct, tc.wantHTML)
			}
			if !tc.wantHTML && !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content type %q", ct)
			}
		})
	}
	// The HTML index shows every section, and the live values.
	body := adminGet(t, h, "/", browserAccept).Body.String()
	for _, want := range []string{`id="policy-version" class="mono">v7<`, `id="breakers"`, `class="state-closed">closed<`,
		`id="endpoints"`, "127.0.0.1:9001", `id="concurrency"`, "fixed 8", `id="certs"`, "spiffe://", `action="explain"`, `name="caller"`} {
		if !strings.Contains(body, want) {
			t.Errorf("index lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("%s", body)
	}
}

// TestAdminHTMLEscapes: text from the policy and the query is escaped on
// every page.
func TestAdminHTMLEscapes(t *testing.T) {
	const evil = `<script>alert(1)</script>`
	m := newTestMesh(t, strings.Replace(adminHTMLPolicy, "version: v7", "version: '"+evil+"'", 1))
	// A rejected update whose reason quotes the document's text.
	m.rejects.Add(1)
	m.rejection.Store(&rejection{At: m.clock.Now(), Source: "file:/etc/<mesh>.yaml", Error: `policy: services.billing.version: "<script>alert(3)</script>" is not a label`})
	h := m.AdminHandler()
	index := adminGet(t, h, "/", browserAccept).Body.String()
	for _, want := range []string{`id="last-rejection"`, `1 rejected`, "file:/etc/&lt;mesh&gt;.yaml", "&lt;script&gt;alert(3)&lt;/script&gt;"} {
		if !strings.Contains(index, want) {
			t.Errorf("index lacks %q", want)
		}
	}
	for _, path := range []string{"/", "/config?format=html",
		"/explain?format=html&url=" + url.QueryEscape("http://billing/x") + "&caller=" + url.QueryEscape(`"><script>alert(2)</script>`)} {
		body := adminGet(t, h, path, browserAccept).Body.String()
		if strings.Contains(body, "<script") {
			t.Errorf("%s: unescaped script:\n%s", path, body)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(") {
			t.Errorf("%s: the text is not shown escaped:\n%s", path, body)
		}
	}
}

// TestAdminSecurityHeaders: every answer carries the strict CSP, and the
// page has no inline script or style that it would block.
func TestAdminSecurityHeaders(t *testing.T) {
	h := newTestMesh(t, adminHTMLPolicy).AdminHandler()
	for _, path := range []string{"/", "/?format=json", "/config", "/endpoints", "/breakers?format=html", "/protections",
		"/certs", "/explain?url=http://billing/x", "/explain", "/metrics", "/admin.css", "/nosuch"} {
		rec := adminGet(t, h, path, browserAccept)
		if got := rec.Header().Get("Content-Security-Policy"); got != adminCSP {
			t.Errorf("%s: CSP %q", path, got)
		}
		if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", path, got)
		}
		body := rec.Body.String()
		if !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
			continue
		}
		if bad := inlineCode.FindString(stripForms(body)); bad != "" {
			t.Errorf("%s: the page holds %q", path, bad)
		}
	}
	for _, must := range []string{"default-src 'none'", "style-src 'self'", "form-action 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(adminCSP, must) {
			t.Errorf("CSP lacks %s", must)
		}
	}
	if rec := adminGet(t, h, "/admin.css", ""); rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/css") {
		t.Errorf("admin.css: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
}

// inlineCode is what a strict CSP would block or what loads from
// elsewhere: scripts, inline styles, event attributes, absolute URLs.
var inlineCode = regexp.MustCompile(`(?i)<script|<style|\sstyle=|\son[a-z]+=|(src|href|action)="[a-z]+:`)

// stripForms drops the placeholder texts, which name example URLs.
func stripForms(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, `placeholder="`)
		if i < 0 {
			return b.String() + s
		}
		b.WriteString(s[:i])
		s = s[i+len(`placeholder="`):]
		if j := strings.IndexByte(s, '"'); j >= 0 {
			s = s[j+1:]
		}
	}
}

// TestAdminExplainForm: the form's GET, with its empty fields, explains
// the call in a page and keeps what was asked in the form.
func TestAdminExplainForm(t *testing.T) {
	h := newTestMesh(t, adminHTMLPolicy).AdminHandler()
	q := "url=" + url.QueryEscape("http://billing/x") + "&method=POST&header=x-a%3Ab&header=&caller="
	rec := adminGet(t, h, "/explain?format=html&"+q, browserAccept)
	body := rec.Body.String()
	if rec.Code != 200 || !strings.Contains(body, "&#34;route&#34;: &#34;all&#34;") ||
		!strings.Contains(body, `<option selected>POST</option>`) || !strings.Contains(body, `value="x-a:b"`) {
		t.Fatalf("%d\n%s", rec.Code, body)
	}
	// Without format=html, the same query is the JSON API's, which refuses
	// an empty header.
	if rec := adminGet(t, h, "/explain?"+q, ""); rec.Code != 400 {
		t.Fatalf("JSON explain: %d %s", rec.Code, rec.Body)
	}
	// A bad request is said in the page with its code.
	rec = adminGet(t, h, "/explain?format=html", browserAccept)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "url parameter is required") {
		t.Fatalf("%d\n%s", rec.Code, rec.Body)
	}
}

func TestAdminMetricsOff(t *testing.T) {
	rec := adminGet(t, newTestMesh(t, adminHTMLPolicy).AdminHandler(), "/metrics", "")
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 404 || !strings.Contains(string(body), "WithMetricsHandler") || !strings.Contains(string(body), "go.opentelemetry.io/otel/exporters/prometheus") {
		t.Fatalf("%d %s", rec.Code, body)
	}
}
