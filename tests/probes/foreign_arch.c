/* Syscalls from another ABI than the process's own: i386 int 0x80 and x32. */
#include <stdio.h>
int main(void) {
    long ret;
    /* i386 getpid is 20 */
    __asm__ volatile ("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    printf("int80 getpid -> %ld\n", ret);
    /* x32 getpid: 39 | 0x40000000 */
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(39L | 0x40000000L) : "rcx", "r11", "memory");
    printf("x32 getpid -> %ld\n", ret);
    return 0;
}
