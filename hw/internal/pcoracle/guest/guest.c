/* pcoracle guest: runs a script of port and MMIO accesses (a multiboot module of
   little-endian {op, address, value} words) and writes every value read to the
   debug console at port 0xe9, then exits QEMU through isa-debug-exit at 0xf4. */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(p)); }
static inline void outw(u16 p, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(p)); }
static inline void outl(u16 p, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u16 inw(u16 p) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline u32 inl(u16 p) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }

static void emit(u32 v) {
	for (int i = 0; i < 4; i++)
		outb(0xe9, (u8)(v >> (8 * i)));
}

static void quit(u8 code) {
	outb(0xf4, code);
	for (;;)
		__asm__ volatile("hlt");
}

struct mbi { u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr; };
struct mod { u32 start, end, string, reserved; };

void kmain(u32 magic, struct mbi *mbi) {
	if (magic != 0x2BADB002 || !(mbi->flags & 8) || mbi->mods_count == 0)
		quit(2);
	struct mod *m = (struct mod *)mbi->mods_addr;
	volatile u32 *p = (u32 *)m->start, *end = (u32 *)m->end;
	emit(0x4f524347); /* "GCRO": start marker */
	while (p + 3 <= end) {
		u32 op = p[0], a = p[1], v = p[2];
		p += 3;
		switch (op) {
		case 1: outb(a, v); break;
		case 2: emit(inb(a)); break;
		case 3: outw(a, v); break;
		case 4: emit(inw(a)); break;
		case 5: outl(a, v); break;
		case 6: emit(inl(a)); break;
		case 7: *(volatile u32 *)a = v; break;
		case 8: emit(*(volatile u32 *)a); break;
		case 9: { /* wait: pre-write (a>>16, v>>16), then inb(a&0xffff) & (v&0xff) == (v>>8)&0xff */
			u32 n = 0;
			for (;;) {
				if (a >> 16)
					outb(a >> 16, v >> 16);
				if ((inb(a & 0xffff) & (v & 0xff)) == ((v >> 8) & 0xff))
					break;
				if (++n == 100000000)
					quit(4);
			}
			break;
		}
		case 10: { /* wait: readl(a) & v == the address word of the next triple */
			u32 want = p[1], n = 0;
			p += 3;
			while ((*(volatile u32 *)a & v) != want)
				if (++n == 100000000)
					quit(4);
			break;
		}
		case 11: { /* take one interrupt: sti, wait up to a bound, report the vector */
			extern volatile u32 last_vector, got_interrupt;
			u32 n = 0;
			got_interrupt = 0;
			__asm__ volatile("sti");
			while (!got_interrupt && ++n < 4000000)
				__asm__ volatile("pause");
			__asm__ volatile("cli");
			emit(got_interrupt ? last_vector : 0xffffffff);
			break;
		}
		default: quit(3);
		}
	}
	quit(0);
}
