#!/bin/bash
# bench/idle.ts runs this in each host once a second. Arguments: UNIT=PID (the PID the last
# sample found, 0 at first). Per unit: its MainPID (systemctl only when the given PID left
# the unit's cgroup), that PID's VmRSS/VmHWM/Rss* lines and stat line, the cgroup's cpu.stat and its
# processes with their RSS. Builtins only (read, echo): no fork besides systemctl.
# Output format: see parseSample in bench/idle-lib.ts.
root=/sys/fs/cgroup/unified; [ -d $root/system.slice ] || root=/sys/fs/cgroup
for spec in "$@"; do
  u=${spec%=*}; pid=${spec#*=}; cg=$root/system.slice/$u; found=
  if [ "$pid" != 0 ] && [ -r $cg/cgroup.procs ]; then
    while read -r q; do [ "$q" = "$pid" ] && found=1; done < $cg/cgroup.procs
  fi
  [ -n "$found" ] || pid=$(systemctl show -P MainPID "$u" 2>/dev/null); pid=${pid:-0}
  echo "@unit $u $pid"
  if [ "$pid" != 0 ] && [ -r /proc/$pid/stat ]; then
    echo @status
    while read -r k v _; do case $k in VmRSS:|VmHWM:|RssAnon:|RssFile:|RssShmem:) echo "$k $v kB";; esac; done < /proc/$pid/status
    echo @stat
    read -r line < /proc/$pid/stat && echo "$line"
  fi
  echo @cpu
  [ -r $cg/cpu.stat ] && while read -r k v; do echo "$k $v"; done < $cg/cpu.stat
  echo @procs
  if [ -r $cg/cgroup.procs ]; then
    while read -r p; do
      comm=; rss=
      read -r comm 2>/dev/null < /proc/$p/comm
      while read -r k v _; do [ "$k" = VmRSS: ] && rss=$v; done 2>/dev/null < /proc/$p/status
      echo "$p $comm $rss"
    done < $cg/cgroup.procs
  fi
  echo @end
done
