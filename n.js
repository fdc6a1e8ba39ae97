const {Firewall}=require('/work/main/bindings-node/vallum.js')
const fw=new Firewall()
const ev=o=>'data: '+JSON.stringify(o)+'\n\n'
const ch=(c,i)=>ev({choices:[{index:i,delta:{content:c}}]})
const s=ch('key AKIA',1)+ev({choices:[{index:0,delta:{},finish_reason:'stop'}]})+ch('IOSFODNN7EXAMPLE ok ',1)
let st=fw.sseStream({}); let o=st.push(s)+st.finish(); console.log(o)
st=fw.sseStream({payload:3}); o=''; for (const c of (ch('mail da',0)+ch('na@example.org ok ',0))) o+=st.push(c); o+=st.finish(); console.log(o)
