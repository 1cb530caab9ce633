/* Multiboot test kernel: prints what the boot loader handed over (registers,
   the multiboot information, modules and their contents, the memory map) on COM1,
   then powers off: ACPI S5 on gemu's PM block at 0x600, then QEMU's isa-debug-exit
   at 0xf4. */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

extern u32 saved_esp, saved_eflags;
static u32 bss_probe[64]; /* must be zero: the loader clears the bss */

static inline void outb(u16 p, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(p)); }
static inline void outw(u16 p, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(p)); }
static inline u8 inb(u16 p) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }

static void putc(char c) {
	while (!(inb(0x3fd) & 0x20))
		;
	outb(0x3f8, c);
}
static void puts(const char *s) { while (*s) putc(*s++); }
static void hex(u32 v) {
	for (int i = 28; i >= 0; i -= 4)
		putc("0123456789abcdef"[(v >> i) & 15]);
}
static void dec(u32 v) {
	char b[12];
	int n = 0;
	do { b[n++] = '0' + v % 10; v /= 10; } while (v);
	while (n) putc(b[--n]);
}
static void kv(const char *k, u32 v) { puts(k); hex(v); putc(' '); }
static void str(const char *k, u32 addr) {
	puts(k);
	putc('"');
	if (addr) puts((const char *)addr);
	putc('"');
	putc(' ');
}

struct mbi {
	u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
	u32 syms[4];
	u32 mmap_length, mmap_addr, drives_length, drives_addr, config_table, boot_loader_name;
};
struct mod { u32 start, end, string, reserved; };
struct mmap { u32 size; u64 base, len; u32 type; } __attribute__((packed));

static u32 sum(const u8 *p, const u8 *end) {
	u32 h = 2166136261u; /* FNV-1a */
	for (; p < end; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

void kmain(u32 magic, struct mbi *mbi) {
	u16 cs, ds, es, ss, fs, gs;
	u32 cr0;
	__asm__ volatile("mov %%cs, %0; mov %%ds, %1; mov %%es, %2; mov %%ss, %3; mov %%fs, %4; mov %%gs, %5"
		: "=r"(cs), "=r"(ds), "=r"(es), "=r"(ss), "=r"(fs), "=r"(gs));
	__asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
	puts("MBTEST\n");
	kv("magic=", magic); kv("mbi=", (u32)mbi); putc('\n');
	kv("cs=", cs); kv("ds=", ds); kv("es=", es); kv("ss=", ss); kv("fs=", fs); kv("gs=", gs); putc('\n');
	kv("cr0=", cr0 & 0x8000003f); kv("if_df=", saved_eflags & 0x600); putc('\n');
	u32 nz = 0;
	for (int i = 0; i < 64; i++) nz |= bss_probe[i];
	kv("bss=", nz); putc('\n');
	kv("flags=", mbi->flags); putc('\n');
	if (mbi->flags & 1) {
		puts("mem_lower="); dec(mbi->mem_lower); puts(" mem_upper="); dec(mbi->mem_upper); putc('\n');
	}
	if (mbi->flags & 2) { kv("boot_device=", mbi->boot_device); putc('\n'); }
	if (mbi->flags & 4) { kv("cmdline_addr=", mbi->cmdline); str("cmdline=", mbi->cmdline); putc('\n'); }
	if (mbi->flags & 0x200) { str("loader=", mbi->boot_loader_name); putc('\n'); }
	if (mbi->flags & 8) {
		kv("mods_count=", mbi->mods_count); kv("mods_addr=", mbi->mods_addr); putc('\n');
		struct mod *m = (struct mod *)mbi->mods_addr;
		for (u32 i = 0; i < mbi->mods_count; i++, m++) {
			puts("mod "); dec(i); putc(' ');
			kv("start=", m->start); kv("end=", m->end); kv("fnv=", sum((u8 *)m->start, (u8 *)m->end));
			str("cmdline=", m->string); putc('\n');
		}
	}
	if (mbi->flags & 0x40) {
		kv("mmap_addr=", mbi->mmap_addr); kv("mmap_length=", mbi->mmap_length); putc('\n');
		u32 p = mbi->mmap_addr, end = p + mbi->mmap_length, n = 0;
		while (p < end && n++ < 64) {
			struct mmap *e = (struct mmap *)p;
			puts("mmap ");
			kv("size=", e->size); kv("base=", (u32)(e->base >> 32)); hex((u32)e->base); putc(' ');
			kv("len=", (u32)(e->len >> 32)); hex((u32)e->len); putc(' ');
			kv("type=", e->type); putc('\n');
			p += e->size + 4;
		}
	}
	puts("END\n");
	outw(0x604, 0x3401);
	outb(0xf4, 0);
}
