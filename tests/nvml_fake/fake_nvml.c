/*
 * A fake libnvidia-ml.so.1 for sysgauge's tests: the real, unmodified nvidia-ml-py talks to it through
 * ctypes exactly as it talks to the driver's library. Written for this project from the NVML API's
 * documented signatures and struct layouts; behaviour follows the real driver where tests depend on it:
 * versioned structs are checked, process lists use the two-call size protocol, a missing symbol is how an
 * old driver looks (build with -DOLD_DRIVER), and return codes can be injected per function and device.
 *
 * The scenario is a file of "key value" lines (tests/nvml_fake/scenario.py writes it from JSON), named by
 * FAKE_NVML_SCENARIO and re-read at every nvmlInit, so one loaded library serves many scenarios.
 * `dev.N.hang_while PATH` makes every query of device N block while PATH exists (a driver call that hangs).
 * Test-only controls: fake_nvml_set("key value"), fake_nvml_call_count("nvmlFoo"), fake_nvml_reset_counts().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum {
    OK = 0, UNINITIALIZED = 1, INVALID_ARGUMENT = 2, NOT_SUPPORTED = 3, NOT_FOUND = 6,
    INSUFFICIENT_SIZE = 7, GPU_IS_LOST = 15, ARGUMENT_VERSION_MISMATCH = 25, UNKNOWN = 999
};

#define MAX_DEVICES 64
#define MAX_PROCS 64
#define MAX_MIG 8
#define NO_VALUE 0xFFFFFFFFu

/* Every exported NVML function, so calls can be counted and return codes injected by name. */
#define FUNCTIONS(X) \
    X(nvmlInitWithFlags) X(nvmlInit_v2) X(nvmlShutdown) X(nvmlSystemGetDriverVersion) \
    X(nvmlSystemGetCudaDriverVersion) X(nvmlSystemGetCudaDriverVersion_v2) X(nvmlDeviceGetCount_v2) \
    X(nvmlDeviceGetHandleByIndex_v2) X(nvmlDeviceGetHandleByUUID) X(nvmlDeviceGetIndex) X(nvmlDeviceGetName) \
    X(nvmlDeviceGetUUID) X(nvmlDeviceGetPciInfo_v3) X(nvmlDeviceGetUtilizationRates) X(nvmlDeviceGetMemoryInfo) \
    X(nvmlDeviceGetMemoryInfo_v2) X(nvmlDeviceGetTemperature) X(nvmlDeviceGetTemperatureV) \
    X(nvmlDeviceGetPowerUsage) X(nvmlDeviceGetEnforcedPowerLimit) X(nvmlDeviceGetTotalEnergyConsumption) \
    X(nvmlDeviceGetClockInfo) X(nvmlDeviceGetFanSpeed) X(nvmlDeviceGetEncoderUtilization) \
    X(nvmlDeviceGetDecoderUtilization) X(nvmlDeviceGetTotalEccErrors) X(nvmlDeviceGetCurrentClocksEventReasons) \
    X(nvmlDeviceGetCurrentClocksThrottleReasons) X(nvmlDeviceGetFieldValues) \
    X(nvmlDeviceGetComputeRunningProcesses_v3) X(nvmlDeviceGetGraphicsRunningProcesses_v3) \
    X(nvmlDeviceGetComputeRunningProcesses_v2) X(nvmlDeviceGetGraphicsRunningProcesses_v2) \
    X(nvmlDeviceGetProcessUtilization) X(nvmlDeviceGetMigMode) X(nvmlDeviceGetMaxMigDeviceCount) \
    X(nvmlDeviceGetMigDeviceHandleByIndex) X(nvmlDeviceIsMigDeviceHandle) \
    X(nvmlDeviceGetDeviceHandleFromMigDeviceHandle) X(nvmlDeviceGetPcieThroughput) \
    X(nvmlEventSetCreate) X(nvmlDeviceRegisterEvents) X(nvmlEventSetWait_v2) X(nvmlEventSetFree)

#define AS_ENUM(name) F_##name,
#define AS_NAME(name) #name,
enum { FUNCTIONS(AS_ENUM) F_COUNT };
static const char *function_names[] = { FUNCTIONS(AS_NAME) };
static unsigned long long call_counts[F_COUNT];

typedef struct { unsigned pid; unsigned long long memory; } proc_t;
typedef struct { unsigned pid, sm, mem; } sample_t;

typedef struct device {
    int present, index, parent;            /* parent: index of the GPU for a MIG device, else -1 */
    char uuid[96], name[96], bus_id[32];
    unsigned util_gpu, util_memory, temperature, power_mw, power_limit_mw, fan, encoder, decoder;
    unsigned sm_clock, mem_clock, nvlink_links;
    unsigned long long mem_total, mem_used, mem_free, mem_reserved, energy_mj, ecc_corrected, ecc_uncorrected;
    unsigned long long clock_events, pcie_tx, pcie_rx, nvlink_tx_kib, nvlink_rx_kib;
    int mig_mode, mig_max, mig_slots[MAX_MIG];
    int n_compute, n_graphics, n_samples;
    proc_t compute[MAX_PROCS], graphics[MAX_PROCS];
    sample_t samples[MAX_PROCS];
    int returns[F_COUNT];                  /* injected return code per function (0: behave) */
    int xid_registered;
    long lost_after, calls;                /* GPU_IS_LOST once `calls` exceeds `lost_after` (-1: never) */
    char hang_while[256];                  /* every query blocks while this file exists (a GPU off the bus) */
} device_t;

static device_t devices[MAX_DEVICES];

/* Pending XID events (device index, code), delivered by nvmlEventSetWait_v2 in order. */
#define MAX_EVENTS 256
static struct { int device; unsigned long long xid; } events[MAX_EVENTS];
static volatile int events_head, events_tail;
static int device_count;                   /* GPUs; MIG devices live after them in `devices` */
static int init_return;
static int initialized;
static char driver_version[80];
static int cuda_version;

static void reset_scenario(void) {
    memset(devices, 0, sizeof devices);
    for (int i = 0; i < MAX_DEVICES; i++) {
        devices[i].index = i;
        devices[i].parent = -1;
        devices[i].lost_after = -1;
        for (int s = 0; s < MAX_MIG; s++) devices[i].mig_slots[s] = -1;
    }
    device_count = 0;
    init_return = OK;
    strcpy(driver_version, "550.54.15");
    cuda_version = 12040;
}

static int function_id(const char *name) {
    for (int i = 0; i < F_COUNT; i++)
        if (strcmp(function_names[i], name) == 0) return i;
    return -1;
}

/* "pid:value,pid:value" into procs; returns the count. */
static int parse_procs(const char *text, proc_t *out) {
    int n = 0;
    while (*text && n < MAX_PROCS) {
        unsigned pid; unsigned long long value; int used = 0;
        if (sscanf(text, "%u:%llu%n", &pid, &value, &used) != 2) break;
        out[n].pid = pid; out[n].memory = value; n++;
        text += used;
        if (*text == ',') text++;
    }
    return n;
}

static int parse_samples(const char *text, sample_t *out) {
    int n = 0;
    while (*text && n < MAX_PROCS) {
        unsigned pid, sm, mem; int used = 0;
        if (sscanf(text, "%u:%u:%u%n", &pid, &sm, &mem, &used) != 3) break;
        out[n].pid = pid; out[n].sm = sm; out[n].mem = mem; n++;
        text += used;
        if (*text == ',') text++;
    }
    return n;
}

static void set_line(const char *line) {
    char key[128], value[4096];
    value[0] = 0;
    if (sscanf(line, "%127s %4095[^\n]", key, value) < 1) return;
    unsigned long long number = strtoull(value, NULL, 0);
    if (strcmp(key, "init.return") == 0) { init_return = (int)number; return; }
    if (strcmp(key, "device_count") == 0) { device_count = (int)number; return; }
    if (strcmp(key, "driver_version") == 0) {
        snprintf(driver_version, sizeof driver_version, "%.*s", (int)sizeof driver_version - 1, value);
        return;
    }
    if (strcmp(key, "cuda_version") == 0) { cuda_version = (int)number; return; }
    int index; char field[96];
    if (sscanf(key, "dev.%d.%95s", &index, field) != 2 || index < 0 || index >= MAX_DEVICES) return;
    device_t *d = &devices[index];
    d->present = 1;
#define U(name, member) if (strcmp(field, name) == 0) { d->member = (unsigned)number; return; }
#define ULL(name, member) if (strcmp(field, name) == 0) { d->member = number; return; }
#define STR(name, member) if (strcmp(field, name) == 0) { \
        snprintf(d->member, sizeof d->member, "%.*s", (int)sizeof d->member - 1, value); return; }
    STR("uuid", uuid) STR("name", name) STR("pci_bus_id", bus_id) STR("hang_while", hang_while)
    U("util.gpu", util_gpu) U("util.memory", util_memory) U("temperature", temperature)
    U("power_mw", power_mw) U("power_limit_mw", power_limit_mw) U("fan", fan) U("encoder", encoder)
    U("decoder", decoder) U("clock.sm", sm_clock) U("clock.mem", mem_clock) U("nvlink.links", nvlink_links)
    ULL("memory.total", mem_total) ULL("memory.used", mem_used) ULL("memory.free", mem_free)
    ULL("memory.reserved", mem_reserved) ULL("energy_mj", energy_mj) ULL("ecc.corrected", ecc_corrected)
    ULL("ecc.uncorrected", ecc_uncorrected) ULL("clock_events", clock_events) ULL("pcie.tx", pcie_tx)
    ULL("pcie.rx", pcie_rx) ULL("nvlink.tx_kib", nvlink_tx_kib) ULL("nvlink.rx_kib", nvlink_rx_kib)
    if (strcmp(field, "parent") == 0) { d->parent = (int)strtol(value, NULL, 0); return; }
    if (strcmp(field, "mig.mode") == 0) { d->mig_mode = (int)number; return; }
    if (strcmp(field, "mig.max") == 0) { d->mig_max = (int)number; return; }
    if (strcmp(field, "lost_after") == 0) { d->lost_after = strtol(value, NULL, 0); d->calls = 0; return; }
    if (strcmp(field, "processes.compute") == 0) { d->n_compute = parse_procs(value, d->compute); return; }
    if (strcmp(field, "processes.graphics") == 0) { d->n_graphics = parse_procs(value, d->graphics); return; }
    if (strcmp(field, "process_samples") == 0) { d->n_samples = parse_samples(value, d->samples); return; }
    if (strcmp(field, "xid") == 0) {  /* a test raises an XID critical error on this device */
        int next = (events_tail + 1) % MAX_EVENTS;
        if (next != events_head) {
            events[events_tail].device = index;
            events[events_tail].xid = number;
            events_tail = next;
        }
        return;
    }
    int slot;
    if (sscanf(field, "mig.slot.%d", &slot) == 1 && slot >= 0 && slot < MAX_MIG) {
        d->mig_slots[slot] = (int)strtol(value, NULL, 0);
        return;
    }
    if (strncmp(field, "return.", 7) == 0) {
        int id = function_id(field + 7);
        if (id >= 0) d->returns[id] = (int)number;
        return;
    }
}

static void load_scenario(void) {
    reset_scenario();
    events_head = events_tail = 0;
    const char *path = getenv("FAKE_NVML_SCENARIO");
    if (!path) return;
    FILE *file = fopen(path, "r");
    if (!file) return;
    char line[8192];
    while (fgets(line, sizeof line, file)) set_line(line);
    fclose(file);
}

/* --- test controls ------------------------------------------------------------------------------ */
void fake_nvml_set(const char *line) { set_line(line); }
unsigned long long fake_nvml_call_count(const char *name) {
    int id = function_id(name);
    return id < 0 ? 0 : call_counts[id];
}
void fake_nvml_reset_counts(void) { memset(call_counts, 0, sizeof call_counts); }

/* --- helpers ------------------------------------------------------------------------------------ */
#define COUNT(name) (call_counts[F_##name]++)

/* Common entry of every device query: counts the call, validates the handle, injects failures. */
static nvmlReturn_t enter(int function, device_t *d) {
    call_counts[function]++;
    if (!initialized) return UNINITIALIZED;
    if (d < devices || d >= devices + MAX_DEVICES || !d->present) return INVALID_ARGUMENT;
    d->calls++;
    /* ctypes releases the GIL around the call, as with the real driver: only the calling thread waits. */
    while (d->hang_while[0] && access(d->hang_while, F_OK) == 0) usleep(1000);
    if (d->lost_after >= 0 && d->calls > d->lost_after) return GPU_IS_LOST;
    if (d->returns[function]) return d->returns[function];
    return OK;
}
#define ENTER(name, d) do { nvmlReturn_t r_ = enter(F_##name, (d)); if (r_) return r_; } while (0)

static void copy_string(char *out, unsigned length, const char *value) {
    if (length == 0) return;
    snprintf(out, length, "%s", value);
}

static unsigned long long now_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (unsigned long long)tv.tv_sec * 1000000ull + (unsigned long long)tv.tv_usec;
}

/* --- lifecycle and system ----------------------------------------------------------------------- */
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    COUNT(nvmlInitWithFlags);
    load_scenario();
    if (init_return) return init_return;
    initialized = 1;
    return OK;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) { COUNT(nvmlShutdown); initialized = 0; return OK; }

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case OK: return "Success";
    case NOT_SUPPORTED: return "Not Supported";
    case GPU_IS_LOST: return "GPU is lost";
    default: return "Fake NVML error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    COUNT(nvmlSystemGetDriverVersion);
    if (!initialized) return UNINITIALIZED;
    copy_string(version, length, driver_version);
    return OK;
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    COUNT(nvmlSystemGetCudaDriverVersion); *version = cuda_version; return OK;
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    COUNT(nvmlSystemGetCudaDriverVersion_v2); *version = cuda_version; return OK;
}

/* --- enumeration and identity ------------------------------------------------------------------- */
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    COUNT(nvmlDeviceGetCount_v2);
    if (!initialized) return UNINITIALIZED;
    *count = (unsigned)device_count;
    return OK;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, device_t **device) {
    COUNT(nvmlDeviceGetHandleByIndex_v2);
    if (!initialized) return UNINITIALIZED;
    if (index >= (unsigned)device_count) return INVALID_ARGUMENT;
    device_t *d = &devices[index];
    if (d->lost_after >= 0 && d->calls >= d->lost_after) return GPU_IS_LOST;
    if (d->returns[F_nvmlDeviceGetHandleByIndex_v2]) return d->returns[F_nvmlDeviceGetHandleByIndex_v2];
    *device = d;
    return OK;
}
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, device_t **device) {
    COUNT(nvmlDeviceGetHandleByUUID);
    if (!initialized) return UNINITIALIZED;
    for (int i = 0; i < MAX_DEVICES; i++)
        if (devices[i].present && strcmp(devices[i].uuid, uuid) == 0) { *device = &devices[i]; return OK; }
    return NOT_FOUND;
}
nvmlReturn_t nvmlDeviceGetIndex(device_t *d, unsigned int *index) {
    ENTER(nvmlDeviceGetIndex, d); *index = (unsigned)d->index; return OK;
}
nvmlReturn_t nvmlDeviceGetName(device_t *d, char *name, unsigned int length) {
    ENTER(nvmlDeviceGetName, d); copy_string(name, length, d->name); return OK;
}
nvmlReturn_t nvmlDeviceGetUUID(device_t *d, char *uuid, unsigned int length) {
    ENTER(nvmlDeviceGetUUID, d); copy_string(uuid, length, d->uuid); return OK;
}

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

nvmlReturn_t nvmlDeviceGetPciInfo_v3(device_t *d, nvmlPciInfo_t *pci) {
    ENTER(nvmlDeviceGetPciInfo_v3, d);
    memset(pci, 0, sizeof *pci);
    copy_string(pci->busId, sizeof pci->busId, d->bus_id);
    copy_string(pci->busIdLegacy, sizeof pci->busIdLegacy, d->bus_id);
    return OK;
}

/* --- core metrics ------------------------------------------------------------------------------- */
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned int version; int sensorType; int temperature; } nvmlTemperature_v1_t;

nvmlReturn_t nvmlDeviceGetUtilizationRates(device_t *d, nvmlUtilization_t *u) {
    ENTER(nvmlDeviceGetUtilizationRates, d);
    if (d->parent >= 0 || d->mig_mode) return NOT_SUPPORTED;  /* NVML has no utilization under MIG */
    u->gpu = d->util_gpu; u->memory = d->util_memory;
    return OK;
}
nvmlReturn_t nvmlDeviceGetMemoryInfo(device_t *d, nvmlMemory_t *m) {
    ENTER(nvmlDeviceGetMemoryInfo, d);
    /* v1 counts reserved memory as used, as drivers since R510 do. */
    m->total = d->mem_total; m->free = d->mem_free; m->used = d->mem_used + d->mem_reserved;
    return OK;
}
#ifndef OLD_DRIVER
nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(device_t *d, nvmlMemory_v2_t *m) {
    ENTER(nvmlDeviceGetMemoryInfo_v2, d);
    if (m->version != 0x02000028u) return ARGUMENT_VERSION_MISMATCH;
    m->total = d->mem_total; m->reserved = d->mem_reserved; m->free = d->mem_free; m->used = d->mem_used;
    return OK;
}
nvmlReturn_t nvmlDeviceGetTemperatureV(device_t *d, nvmlTemperature_v1_t *t) {
    ENTER(nvmlDeviceGetTemperatureV, d);
    if (t->version != 0x100000Cu) return ARGUMENT_VERSION_MISMATCH;
    if (t->sensorType != 0) return NOT_SUPPORTED;
    t->temperature = (int)d->temperature;
    return OK;
}
#endif
nvmlReturn_t nvmlDeviceGetTemperature(device_t *d, int sensor, unsigned int *temperature) {
    ENTER(nvmlDeviceGetTemperature, d);
    if (sensor != 0) return NOT_SUPPORTED;
    *temperature = d->temperature;
    return OK;
}
nvmlReturn_t nvmlDeviceGetPowerUsage(device_t *d, unsigned int *mw) {
    ENTER(nvmlDeviceGetPowerUsage, d); *mw = d->power_mw; return OK;
}
nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(device_t *d, unsigned int *mw) {
    ENTER(nvmlDeviceGetEnforcedPowerLimit, d); *mw = d->power_limit_mw; return OK;
}
nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(device_t *d, unsigned long long *mj) {
    ENTER(nvmlDeviceGetTotalEnergyConsumption, d); *mj = d->energy_mj; return OK;
}
nvmlReturn_t nvmlDeviceGetClockInfo(device_t *d, int type, unsigned int *mhz) {
    ENTER(nvmlDeviceGetClockInfo, d);
    if (d->parent >= 0) return NOT_SUPPORTED;
    if (type == 1) { *mhz = d->sm_clock; return OK; }
    if (type == 2) { *mhz = d->mem_clock; return OK; }
    return NOT_SUPPORTED;
}
nvmlReturn_t nvmlDeviceGetFanSpeed(device_t *d, unsigned int *percent) {
    ENTER(nvmlDeviceGetFanSpeed, d); *percent = d->fan; return OK;
}
nvmlReturn_t nvmlDeviceGetEncoderUtilization(device_t *d, unsigned int *util, unsigned int *period_us) {
    ENTER(nvmlDeviceGetEncoderUtilization, d); *util = d->encoder; *period_us = 167000; return OK;
}
nvmlReturn_t nvmlDeviceGetDecoderUtilization(device_t *d, unsigned int *util, unsigned int *period_us) {
    ENTER(nvmlDeviceGetDecoderUtilization, d); *util = d->decoder; *period_us = 167000; return OK;
}
nvmlReturn_t nvmlDeviceGetTotalEccErrors(device_t *d, int error_type, int counter_type, unsigned long long *n) {
    ENTER(nvmlDeviceGetTotalEccErrors, d);
    (void)counter_type;
    *n = error_type == 0 ? d->ecc_corrected : d->ecc_uncorrected;
    return OK;
}
#ifndef OLD_DRIVER
nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(device_t *d, unsigned long long *reasons) {
    ENTER(nvmlDeviceGetCurrentClocksEventReasons, d); *reasons = d->clock_events; return OK;
}
#endif
nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(device_t *d, unsigned long long *reasons) {
    ENTER(nvmlDeviceGetCurrentClocksThrottleReasons, d); *reasons = d->clock_events; return OK;
}
/* Blocks about 20 ms on a real GPU; sysgauge must never call it by default (tests count the calls). */
nvmlReturn_t nvmlDeviceGetPcieThroughput(device_t *d, int counter, unsigned int *kbps) {
    ENTER(nvmlDeviceGetPcieThroughput, d); (void)counter; *kbps = 0; return OK;
}

/* --- field values ------------------------------------------------------------------------------- */
typedef union { double d; unsigned int ui; unsigned long ul; unsigned long long ull; long long sll; int si; } value_t;
typedef struct {
    unsigned int fieldId, scopeId;
    long long timestamp, latencyUsec;
    int valueType;
    nvmlReturn_t nvmlReturn;
    value_t value;
} nvmlFieldValue_t;

nvmlReturn_t nvmlDeviceGetFieldValues(device_t *d, int count, nvmlFieldValue_t *values) {
    ENTER(nvmlDeviceGetFieldValues, d);
    unsigned long long stamp = now_us();
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *v = &values[i];
        v->timestamp = (long long)stamp;
        v->latencyUsec = 3;
        v->valueType = 3; /* unsigned long long */
        v->nvmlReturn = OK;
        switch (v->fieldId) {
        case 197: v->value.ull = d->pcie_tx; break;
        case 198: v->value.ull = d->pcie_rx; break;
        case 91:
            if (!d->nvlink_links) { v->nvmlReturn = NOT_SUPPORTED; break; }
            v->valueType = 1; v->value.ui = d->nvlink_links; break;
        case 138: case 139:
            if (!d->nvlink_links || v->scopeId >= d->nvlink_links) { v->nvmlReturn = NOT_SUPPORTED; break; }
            v->value.ull = v->fieldId == 138 ? d->nvlink_tx_kib : d->nvlink_rx_kib;
            break;
        default: v->nvmlReturn = NOT_SUPPORTED;
        }
        if (d->parent >= 0) v->nvmlReturn = NOT_SUPPORTED;
    }
    /* Like the driver: the call succeeds and each entry carries its own return code. */
    return OK;
}

/* --- processes ---------------------------------------------------------------------------------- */
typedef struct { unsigned int pid; unsigned long long usedGpuMemory; unsigned int gpuInstanceId, computeInstanceId; } nvmlProcessInfo_t;

static nvmlReturn_t list_processes(const proc_t *procs, int n, unsigned int *count, nvmlProcessInfo_t *infos) {
    if (n == 0) { *count = 0; return OK; }  /* SUCCESS on the size probe means "none" */
    if (infos == NULL || *count < (unsigned)n) { *count = (unsigned)n; return INSUFFICIENT_SIZE; }
    for (int i = 0; i < n; i++) {
        infos[i].pid = procs[i].pid;
        infos[i].usedGpuMemory = procs[i].memory;
        infos[i].gpuInstanceId = NO_VALUE;
        infos[i].computeInstanceId = NO_VALUE;
    }
    *count = (unsigned)n;
    return OK;
}
#ifndef OLD_DRIVER
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(device_t *d, unsigned int *count, nvmlProcessInfo_t *p) {
    ENTER(nvmlDeviceGetComputeRunningProcesses_v3, d); return list_processes(d->compute, d->n_compute, count, p);
}
nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(device_t *d, unsigned int *count, nvmlProcessInfo_t *p) {
    ENTER(nvmlDeviceGetGraphicsRunningProcesses_v3, d); return list_processes(d->graphics, d->n_graphics, count, p);
}
#endif
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(device_t *d, unsigned int *count, nvmlProcessInfo_t *p) {
    ENTER(nvmlDeviceGetComputeRunningProcesses_v2, d); return list_processes(d->compute, d->n_compute, count, p);
}
nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(device_t *d, unsigned int *count, nvmlProcessInfo_t *p) {
    ENTER(nvmlDeviceGetGraphicsRunningProcesses_v2, d); return list_processes(d->graphics, d->n_graphics, count, p);
}

typedef struct {
    unsigned int pid; unsigned long long timeStamp; unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

nvmlReturn_t nvmlDeviceGetProcessUtilization(device_t *d, nvmlProcessUtilizationSample_t *samples,
                                             unsigned int *count, unsigned long long last_seen) {
    ENTER(nvmlDeviceGetProcessUtilization, d);
    if (d->parent >= 0 || d->mig_mode) return NOT_SUPPORTED;
    (void)last_seen;  /* every call sees fresh samples: the fake's clock moves with the caller's */
    int n = d->n_samples;
    if (n == 0) return NOT_FOUND;
    if (samples == NULL || *count < (unsigned)n) { *count = (unsigned)n; return INSUFFICIENT_SIZE; }
    unsigned long long stamp = now_us();
    for (int i = 0; i < n; i++) {
        samples[i].pid = d->samples[i].pid;
        samples[i].timeStamp = stamp;
        samples[i].smUtil = d->samples[i].sm;
        samples[i].memUtil = d->samples[i].mem;
        samples[i].encUtil = 0;
        samples[i].decUtil = 0;
    }
    *count = (unsigned)n;
    return OK;
}

/* --- MIG ---------------------------------------------------------------------------------------- */
nvmlReturn_t nvmlDeviceGetMigMode(device_t *d, unsigned int *current, unsigned int *pending) {
    ENTER(nvmlDeviceGetMigMode, d);
    if (!d->mig_max) return NOT_SUPPORTED;  /* a GPU that cannot do MIG */
    *current = (unsigned)d->mig_mode; *pending = (unsigned)d->mig_mode;
    return OK;
}
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(device_t *d, unsigned int *count) {
    ENTER(nvmlDeviceGetMaxMigDeviceCount, d);
    *count = d->mig_mode ? (unsigned)d->mig_max : 0;
    return OK;
}
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(device_t *d, unsigned int index, device_t **mig) {
    ENTER(nvmlDeviceGetMigDeviceHandleByIndex, d);
    if (!d->mig_mode || index >= MAX_MIG || index >= (unsigned)d->mig_max) return INVALID_ARGUMENT;
    int slot = d->mig_slots[index];
    if (slot < 0 || slot >= MAX_DEVICES || !devices[slot].present) return NOT_FOUND;  /* an empty slot */
    *mig = &devices[slot];
    return OK;
}
nvmlReturn_t nvmlDeviceIsMigDeviceHandle(device_t *d, unsigned int *is_mig) {
    ENTER(nvmlDeviceIsMigDeviceHandle, d); *is_mig = d->parent >= 0; return OK;
}
nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(device_t *d, device_t **parent) {
    ENTER(nvmlDeviceGetDeviceHandleFromMigDeviceHandle, d);
    if (d->parent < 0) return INVALID_ARGUMENT;
    *parent = &devices[d->parent];
    return OK;
}

/* --- XID events --------------------------------------------------------------------------------- */
typedef struct { int unused; } event_set_t;
static event_set_t the_event_set;
typedef struct {
    device_t *device;
    unsigned long long eventType, eventData;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlEventData_t;

nvmlReturn_t nvmlEventSetCreate(event_set_t **set) {
    COUNT(nvmlEventSetCreate);
    if (!initialized) return UNINITIALIZED;
    *set = &the_event_set;
    return OK;
}
nvmlReturn_t nvmlDeviceRegisterEvents(device_t *d, unsigned long long types, event_set_t *set) {
    ENTER(nvmlDeviceRegisterEvents, d);
    if (set != &the_event_set) return INVALID_ARGUMENT;
    if (!(types & 0x8)) return NOT_SUPPORTED;
    d->xid_registered = 1;
    return OK;
}
/* Like the driver: blocks up to timeout_ms for an event, else NVML_ERROR_TIMEOUT (10). */
nvmlReturn_t nvmlEventSetWait_v2(event_set_t *set, nvmlEventData_t *data, unsigned int timeout_ms) {
    COUNT(nvmlEventSetWait_v2);
    if (set != &the_event_set) return INVALID_ARGUMENT;
    for (unsigned int waited = 0;; waited++) {
        if (events_head != events_tail) {
            int index = events[events_head].device;
            if (devices[index].xid_registered) {
                data->device = &devices[index];
                data->eventType = 0x8;
                data->eventData = events[events_head].xid;
                data->gpuInstanceId = NO_VALUE;
                data->computeInstanceId = NO_VALUE;
                events_head = (events_head + 1) % MAX_EVENTS;
                return OK;
            }
            events_head = (events_head + 1) % MAX_EVENTS;  /* nobody listens on that device */
            continue;
        }
        if (waited >= timeout_ms) return 10;
        usleep(1000);
    }
}
nvmlReturn_t nvmlEventSetFree(event_set_t *set) {
    COUNT(nvmlEventSetFree);
    return set == &the_event_set ? OK : INVALID_ARGUMENT;
}
