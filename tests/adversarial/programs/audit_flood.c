/* audit_flood TRIES SECONDS THREADS FILES: THREADS threads record at once, each thread k
 * alternating a stat (served and recorded in the C loop where strict and audited) and a
 * truncate (served and recorded by Python) of its own files /data/tK/0, /data/tK/1, ... in
 * turn, FILES at most, TRIES in all. Reports how many pairs each thread made, in order: the
 * host checks the audit against exactly these. */
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "attack.h"

#define MOST 64

static long files, per_thread, made[MOST], failed[MOST];

static void *flood(void *argument) {
    long k = (long)argument;
    char path[64];
    struct stat st;
    for (long i = 0; i < per_thread && attack_more(i); i++) {
        snprintf(path, sizeof path, "/data/t%ld/%ld", k, i);
        if (stat(path, &st) != 0 || truncate(path, 0) != 0)
            failed[k]++;
        made[k] = i + 1;
    }
    return NULL;
}

int main(int argc, char **argv) {
    attack_begin(argc, argv);
    long threads = argc > 3 ? atol(argv[3]) : 8;
    files = argc > 4 ? atol(argv[4]) : 1000;
    if (threads < 1 || threads > MOST)
        return 2;
    per_thread = attack_tries / threads < files ? attack_tries / threads : files;
    pthread_t ids[MOST];
    for (long k = 0; k < threads; k++)
        pthread_create(&ids[k], NULL, flood, (void *)k);
    long tries = 0, failures = 0;
    printf("{\"made\": [");
    for (long k = 0; k < threads; k++) {
        pthread_join(ids[k], NULL);
        tries += made[k], failures += failed[k];
        printf("%s%ld", k ? ", " : "", made[k]);
    }
    printf("], \"tries\": %ld, \"failed\": %ld}\n", tries, failures);
    return 0;
}
