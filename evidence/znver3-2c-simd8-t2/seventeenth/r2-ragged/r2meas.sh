cd /work/main
P=".venv/bin/python -m matmul paired"
L="--shape 7 4096 4096 --shape 7 4096 11008 --shape 7 11008 4096 --shape 7 1280 1280"
S="--shape 7 1024 1024 --shape 7 1024 4096 --shape 7 4096 1024 --shape 7 512 2048"
$P rule_based rule_based $L --blocks 8 --csv /tmp/r2/aa-large.csv
$P 'rule_based[mr=2,jpack=32,tn=128,tk=128]' rule_based $L --blocks 8 --csv /tmp/r2/large.csv
$P rule_based rule_based $S --blocks 8 --csv /tmp/r2/aa-small.csv
$P 'rule_based[mr=2,jpack=32,tn=64,tk=128]' rule_based $S --blocks 8 --csv /tmp/r2/small.csv
$P numpy rule_based --model llama2-7b --m-values 7 --blocks 8 --csv /tmp/r2/llama-numpy.csv
$P numpy rule_based --model bert-large --m-values 4 7 --blocks 8 --csv /tmp/r2/bertl-numpy.csv
