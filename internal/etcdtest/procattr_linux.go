package etcdtest

import "syscall"

// procAttr makes the kernel SIGKILL a member when the test binary dies
// without running its cleanups (a test timeout's panic, a crash), so no
// etcd outlives the tests and keeps its ports.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
