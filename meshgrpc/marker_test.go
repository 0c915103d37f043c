package meshgrpc

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/inmesh/inmesh/internal/core"
	"github.com/inmesh/inmesh/mesh"
)

// hostileText is what a hostile or broken peer may send as the reason of a
// denial: line breaks that forge log lines, terminal escapes, a C1 control,
// DEL, a bidi override, a zero-width space, an invalid byte, and far more
// than a reason needs.
var hostileText = "no\nlevel=INFO msg=\"all good\"\r\n\x1b[2J\x1b]0;pwned\x07 \u0085\x7f\u202egnp.exe\u200b\xff " +
	strings.Repeat("é", 600)

// checkPeerText fails the test unless s is fit for logs: valid UTF-8,
// bounded, without control or format characters.
func checkPeerText(t testing.TB, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("not valid UTF-8: %q", s)
	}
	if len(s) > core.MaxPeerText {
		t.Fatalf("%d bytes, want at most %d: %q", len(s), core.MaxPeerText, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			t.Fatalf("control or format character %U in %q", r, s)
		}
	}
}

// forgedStatus is PermissionDenied marked as billing's mesh marks a
// denial, with a hostile message (valid UTF-8, as protobuf requires).
func forgedStatus() *grpcstatus.Status {
	st, err := grpcstatus.New(codes.PermissionDenied, strings.ToValidUTF8(hostileText, "")).WithDetails(&errdetails.ErrorInfo{
		Domain: ErrorDomain, Reason: string(mesh.LayerAuthz),
		Metadata: map[string]string{infoService: "billing", infoPolicyVersion: "v\x1b[2J1"},
	})
	if err != nil {
		panic(err)
	}
	return st
}

// checkSameStatus fails t unless got and want have the same code, message
// and details. Details are compared unpacked: a map field (ErrorInfo's
// metadata) has no fixed order on the wire, so the bytes of the same
// status can differ from one encoding to the next.
func checkSameStatus(t testing.TB, got, want *grpcstatus.Status) {
	t.Helper()
	if got.Code() != want.Code() || got.Message() != want.Message() {
		t.Fatalf("status %v, want %v", got.Proto(), want.Proto())
	}
	gd, wd := got.Details(), want.Details()
	if len(gd) != len(wd) {
		t.Fatalf("details %v, want %v", gd, wd)
	}
	for i := range gd {
		g, gok := gd[i].(proto.Message)
		w, wok := wd[i].(proto.Message)
		if !gok || !wok || !proto.Equal(g, w) {
			t.Fatalf("detail %d: %v, want %v", i, gd[i], wd[i])
		}
	}
}
