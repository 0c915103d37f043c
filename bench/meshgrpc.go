package main

import (
	"google.golang.org/grpc"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
)

// The gRPC entry points of inmesh, in one place.

func meshDialOptions(m *mesh.Mesh) []grpc.DialOption { return meshgrpc.DialOptions(m) }

func meshServerOptions(m *mesh.Mesh) []grpc.ServerOption { return meshgrpc.ServerOptions(m) }
