/* report.h — `sluice report`: governance reports read from audit logs (the
 * access log's JSON lines, plain or gzip): who still calls deprecated
 * models, failures by provider over time, spend against budgets, exception
 * use and policy denials. Offline: nothing here runs inside the gateway. */
#ifndef SL_REPORT_H
#define SL_REPORT_H

/* Run `sluice report REPORT [options] FILE...` (argv after "report").
 * Prints the report on stdout; returns the process exit status (0 ok,
 * 1 a file could not be read, 2 usage or policy error). */
int sl_report_main(int argc, char **argv);

#endif
