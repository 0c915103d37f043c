package meshgrpc

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/inmesh/inmesh/internal/meshtest"
	"github.com/inmesh/inmesh/mesh"
)

// forgedStatus is PermissionDenied marked as billing's mesh marks a
// denial, with a hostile message (valid UTF-8, as protobuf requires).
func forgedStatus() *grpcstatus.Status {
	st, err := grpcstatus.New(codes.PermissionDenied, strings.ToValidUTF8(meshtest.HostileText, "")).WithDetails(&errdetails.ErrorInfo{
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
