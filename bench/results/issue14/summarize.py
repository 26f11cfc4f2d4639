import json,sys
for run in sys.argv[1:]:
    def slab(p):
        d={}
        for l in open(p).read().splitlines()[2:]:
            f=l.split(); d[f[0]]=(int(f[1]),int(f[3]))
        return d
    a=slab(f'{run}/slabinfo-before.txt'); b=slab(f'{run}/slabinfo-held.txt')
    tot=sum(b[k][0]*b[k][1]-a[k][0]*a[k][1] for k in b if k in a)
    proc=b['proc_inode_cache'][0]*b['proc_inode_cache'][1]-a['proc_inode_cache'][0]*a['proc_inode_cache'][1]
    tcp=b['TCP'][0]-a['TCP'][0]
    sa=open(f'{run}/sockstat-before.txt').read().split('\n')[1].split(); sb=open(f'{run}/sockstat-held.txt').read().split('\n')[1].split()
    m={l.rsplit(' ',1)[0]:l.rsplit(' ',1)[1] for l in open(f'{run}/metrics-held.txt').read().splitlines() if l and l[0]!='#'}
    d=json.load(open(f'{run}/idle.json'));s=d['server']
    print(run, d['date'][:19], 'conn',d['stats']['connected'],'failed',d['stats']['connect_failed'])
    print('   slab +%.1f MB, TCP objs +%d, per socket %.0f B (proc_inode %.0f), tcp alloc %s->%s mem %s->%s'%(tot/1e6,tcp,tot/max(tcp,1),proc/max(tcp,1),sa[8],sb[8],sa[10],sb[10]))
    print('   gauge kernel/conn',m.get('wsedge_kernel_bytes_per_connection'),'process/conn',m.get('wsedge_process_bytes_per_connection'),'rss',m['process_resident_memory_bytes'],'open_fds',m.get('process_open_fds'))
    print('   bench rss before %d ready %d after %d  ready-before per conn %.0f; bench rss/conn %.0f; cpu %.1f%%; goroutines %d threads %d'%(s['rss_before_bytes'],s['rss_ready_bytes'],s['rss_after_bytes'],(s['rss_ready_bytes']-s['rss_before_bytes'])/19000,s['rss_per_conn_bytes'],s['cpu_percent'],s['goroutines'],s['threads']))
    print('   load', open(f'{run}/load.txt').read().replace('\n',' | '))
