package main

// The Go side of the one CancelTree line cancelctx's benches/go_benchmarks.rs
// has and Go 1.27's src/context/benchmark_test.go does not: a timer root.
//
//	cd benches/go && GOFLAGS=-mod=mod go test -run XXX -bench . -benchtime 300ms

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func buildContextTree(root context.Context, depth int) {
	for d := 0; d < depth; d++ {
		// The cancel func is discarded on purpose, exactly as in Go's
		// benchmark_test.go (go vet's lostcancel flags it; go test does not run it).
		root, _ = context.WithCancel(root)
	}
}

func BenchmarkCancelTree(b *testing.B) {
	for _, d := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("depth=%d", d), func(b *testing.B) {
			b.Run("Root=TimerCanceler", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
					buildContextTree(ctx, d)
					cancel()
				}
			})
		})
	}
}
