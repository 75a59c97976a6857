//go:build !linux

package etcdtest

import "syscall"

// procAttr is empty where there is no parent-death signal: members of a
// test binary that dies without its cleanups must be killed by hand there.
func procAttr() *syscall.SysProcAttr { return nil }
