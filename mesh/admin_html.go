package mesh

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/inmesh/inmesh/policy"
)

// The admin page is one template and one style sheet, embedded: the page
// loads nothing from elsewhere and runs no script.
//
//go:embed adminui/index.html adminui/admin.css
var adminUI embed.FS

var (
	adminCSS  = mustRead("adminui/admin.css")
	adminTmpl = template.Must(template.New("admin").Funcs(template.FuncMap{
		"json":   compactJSON,
		"join":   func(s []string) string { return strings.Join(s, ", ") },
		"labels": labelText,
		// ago, until and stamp are bound per page to the mesh's clock.
		"ago":   func(time.Time) string { return "" },
		"until": func(time.Time) string { return "" },
		"stamp": func(time.Time) string { return "" },
	}).ParseFS(adminUI, "adminui/index.html"))
)

// adminCSP is every admin response's Content-Security-Policy: nothing but
// the page's own style sheet loads, no script runs, forms post only to the
// admin handler, and no other site may frame it.
const adminCSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func mustRead(name string) []byte {
	b, err := adminUI.ReadFile(name)
	if err != nil {
		panic("mesh: admin page: " + err.Error())
	}
	return b
}

// adminHeaders sets the security headers of every admin response.
func adminHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", adminCSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func serveAdminCSS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	_, _ = w.Write(adminCSS)
}

// wantsHTML reports whether r asks for HTML: ?format=html or json decides;
// otherwise an Accept header that prefers text/html to application/json
// (as browsers send) does. A client that sends no Accept, or */*, gets
// JSON.
func wantsHTML(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "html":
		return true
	case "json":
		return false
	}
	var htmlQ, jsonQ float64
	for _, h := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(h, ",") {
			media, params, _ := strings.Cut(part, ";")
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(v, 64); err == nil {
						q = f
					}
				}
			}
			switch strings.ToLower(strings.TrimSpace(media)) {
			case "text/html":
				htmlQ = max(htmlQ, q)
			case "application/json":
				jsonQ = max(jsonQ, q)
			}
		}
	}
	return htmlQ > 0 && htmlQ > jsonQ
}

// render executes the template name with data, with the mesh's clock for
// the relative times, and writes it as HTML.
func (m *Mesh) render(w http.ResponseWriter, code int, name string, data any) {
	now := m.clock.Now()
	t, err := adminTmpl.Clone()
	if err == nil {
		t = t.Funcs(template.FuncMap{
			"ago":   func(at time.Time) string { return roundDuration(now.Sub(at)) },
			"until": func(at time.Time) string { return roundDuration(at.Sub(now)) },
			"stamp": func(at time.Time) string {
				if at.IsZero() {
					return "never"
				}
				return at.UTC().Format(time.RFC3339)
			},
		})
	}
	var buf bytes.Buffer
	if err == nil {
		err = t.ExecuteTemplate(&buf, name, data)
	}
	if err != nil {
		http.Error(w, "mesh: admin page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Hour || d <= -time.Hour:
		d = d.Round(time.Minute)
	case d >= time.Second || d <= -time.Second:
		d = d.Round(time.Second)
	default:
		d = d.Round(time.Millisecond)
	}
	return d.String()
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func labelText(l map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(l)) {
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		b.WriteString(k + "=" + l[k])
	}
	return b.String()
}

// indexPage is what the HTML index shows.
type indexPage struct {
	Service     string
	Now         time.Time
	Config      ConfigView
	Faults      []FaultState
	Audit       bool
	Endpoints   []ServiceEndpoints
	Breakers    []BreakerState
	Concurrency []DestinationProtections
	AuthzMode   string
	RateLimit   *policy.RateLimit
	Cert        CertView
	Form        explainForm
	Metrics     bool
}

// explainForm is the explain form's fields, filled from a query.
type explainForm struct {
	URL, Method, Caller string
	Headers             []string // always two
	Methods             []string
}

func newExplainForm(q url.Values) explainForm {
	f := explainForm{
		URL:     q.Get("url"),
		Method:  strings.ToUpper(q.Get("method")),
		Caller:  q.Get("caller"),
		Methods: []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"},
	}
	if f.Method == "" {
		f.Method = http.MethodGet
	}
	if !slices.Contains(f.Methods, f.Method) {
		f.Methods = append(f.Methods, f.Method)
	}
	for _, h := range q["header"] {
		if h != "" && len(f.Headers) < 2 {
			f.Headers = append(f.Headers, h)
		}
	}
	for len(f.Headers) < 2 {
		f.Headers = append(f.Headers, "")
	}
	return f
}

func (m *Mesh) adminIndexHTML(w http.ResponseWriter, r *http.Request) {
	p := indexPage{
		Service:   m.cfg.service,
		Now:       m.clock.Now(),
		Config:    m.configView(),
		Endpoints: m.endpointsView(),
		Breakers:  m.breakersView(),
		Form:      newExplainForm(url.Values{}),
		Metrics:   m.cfg.metricsHandler != nil,
	}
	prot := m.protectionsView()
	p.Faults = prot.Faults
	p.AuthzMode = prot.AuthorizationMode
	p.Audit = prot.AuthorizationMode == policy.AuthzAudit
	p.RateLimit = prot.RateLimit
	for _, d := range prot.Destinations {
		if d.Concurrency != nil {
			p.Concurrency = append(p.Concurrency, d)
		}
	}
	// /certs is the one view built outside this file: read its JSON.
	rec := newBufferedResponse()
	m.adminCerts(rec, r)
	if err := json.Unmarshal(rec.body.Bytes(), &p.Cert); err != nil {
		p.Cert.Error = "reading /certs: " + err.Error()
	}
	m.render(w, http.StatusOK, "index", p)
}

// jsonPage shows one JSON view in a page, for ?format=html.
type jsonPage struct {
	Service  string
	Path     string
	JSONLink string
	Code     int
	Body     string
	Form     *explainForm // on /explain
}

// htmlOr serves a JSON view, or with ?format=html the same JSON inside a
// page (and on /explain, the form filled with the query).
func (m *Mesh) htmlOr(path string, jsonView http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") != "html" {
			jsonView(w, r)
			return
		}
		// The form sends every field, empty or not: drop the empty ones
		// and the format, so that the view sees what a tool would send.
		q := r.URL.Query()
		q.Del("format")
		for k, vs := range q {
			vs = slices.DeleteFunc(vs, func(v string) bool { return strings.TrimSpace(v) == "" })
			if len(vs) == 0 {
				q.Del(k)
			} else {
				q[k] = vs
			}
		}
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery = q.Encode()
		rec := newBufferedResponse()
		jsonView(rec, r2)
		p := jsonPage{Service: m.cfg.service, Path: "/" + path, JSONLink: path, Code: rec.code, Body: rec.body.String()}
		if len(q) > 0 {
			p.JSONLink += "?" + r2.URL.RawQuery
		}
		if path == "explain" {
			f := newExplainForm(q)
			p.Form = &f
		}
		m.render(w, rec.code, "json", p)
	}
}

// bufferedResponse is a ResponseWriter that keeps what a view writes.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func newBufferedResponse() *bufferedResponse {
	return &bufferedResponse{header: http.Header{}, code: http.StatusOK}
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferedResponse) WriteHeader(code int)        { b.code = code }

// metricsOff is /metrics's answer without WithMetricsHandler.
const metricsOff = `inmesh: /metrics is off: this mesh was given no metrics handler.
To serve the mesh's metrics in Prometheus text, export them with the OTel
Prometheus exporter and pass its handler:

	reg := prometheus.NewRegistry()                      // github.com/prometheus/client_golang/prometheus
	exp, err := otelprom.New(otelprom.WithRegisterer(reg)) // go.opentelemetry.io/otel/exporters/prometheus
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	m, err := mesh.New(ctx, ..., mesh.WithMeterProvider(mp),
		mesh.WithMetricsHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
`

func (m *Mesh) adminMetrics(w http.ResponseWriter, r *http.Request) {
	if h := m.cfg.metricsHandler; h != nil {
		h.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, metricsOff)
}
