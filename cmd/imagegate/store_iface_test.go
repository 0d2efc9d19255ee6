package main

import (
	"github.com/imagegate/imagegate/gateway"
	"github.com/imagegate/imagegate/store"
	"github.com/imagegate/imagegate/store/postgres"
)

// Either account store serves the gateway.
var (
	_ gateway.Store = (*store.DB)(nil)
	_ gateway.Store = (*postgres.DB)(nil)
)
