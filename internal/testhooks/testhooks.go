// Package testhooks lets the module's black-box tests (systest, and the
// root package's tests that run both providers) reach what the public API
// deliberately lacks, without exporting it. The package that owns each
// hook fills it in at init; this package cannot name their types, so each
// hook is an any that the tests assert to its type.
package testhooks

// LocalOnStore is set by package local, of type
// func(*store.Store, ...varbridge.Option) (*local.State, error): a
// local.State on an existing store, such as the one an in-process server
// serves, so that one set of writes reaches both kinds of watch. Its Close
// leaves the store open.
var LocalOnStore any
