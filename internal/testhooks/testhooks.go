// Package testhooks lets the module's black-box system tests (systest)
// reach what the public API deliberately lacks, without exporting it.
// Package varbridge fills the hooks in at init; this package cannot name
// its types, so each hook is an any that the tests assert to its type.
package testhooks

// WithStore is varbridge's unexported withStore option, of type
// func(*store.Store) varbridge.Option: a LocalState on an existing store,
// such as the one an in-process server serves, so that one set of writes
// reaches both kinds of watch.
var WithStore any
