package bench

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// openSocket starts a non-blocking connect to the target from src (when
// not zero: bound with the port left to connect, so each 4-tuple gets its
// own) and returns the socket. rcvbuf, when set, is the receive buffer,
// set before connect so the window is small from the start.
func (l *loop) openSocket(t *target, rcvbuf int, src [4]byte) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if rcvbuf > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if src != [4]byte{} {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src}); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("bind %v: %w", src, err)
		}
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: t.port, Addr: t.ip})
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	return fd, nil
}

// watch adds fd to the loop's epoll set, edge-triggered.
func (l *loop) watch(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}
