package bench

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// noPwait2 is set once epoll_pwait2 (Linux 5.11) turns out to be missing.
var noPwait2 atomic.Bool

// epollWait waits for events for at most timeoutNs nanoseconds (-1: no
// limit). It uses epoll_pwait2 so paced sends wake on time rather than on
// epoll_wait's millisecond grid, and falls back to epoll_wait on older
// kernels.
func epollWait(epfd int, events []unix.EpollEvent, timeoutNs int64) (int, error) {
	if !noPwait2.Load() {
		var ts unix.Timespec
		var tsp unsafe.Pointer
		if timeoutNs >= 0 {
			ts = unix.NsecToTimespec(timeoutNs)
			tsp = unsafe.Pointer(&ts)
		}
		n, _, errno := unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(epfd),
			uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(tsp), 0, 0)
		if errno == 0 {
			return int(n), nil
		}
		if errno != unix.ENOSYS {
			return 0, errno
		}
		noPwait2.Store(true)
	}
	ms := -1
	if timeoutNs >= 0 {
		ms = int((timeoutNs + 999_999) / 1_000_000)
	}
	return unix.EpollWait(epfd, events, ms)
}
