module cancelctx-bench

go 1.22
